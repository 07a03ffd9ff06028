"""log.jsonl, one strict-JSON record per log interval: written as the run goes, cut back on resume."""
import json
import sys

from .io import atomic_write_text, strict_json


def read_log(path, upto):
    """The records of ``path`` up to iteration ``upto``. A partial last line (a run killed mid-write) is
    dropped; a malformed line before it raises ValueError naming the file and line."""
    lines = path.read_text(encoding="utf-8").split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):  # no newline after it: the write was cut off
                print(f"{path}: dropping the partial last line {number}", file=sys.stderr)
                continue
            raise ValueError(f"{path} line {number} is not a JSON record; repair or remove the line") from None
        if not isinstance(record, dict) or not isinstance(record.get("iteration"), int):
            raise ValueError(f"{path} line {number} has no iteration; repair or remove the line")
        if record["iteration"] <= upto:
            records.append(record)
    return records


class RunLog:
    """Appends one record per line; on resume, the old log is cut back to the checkpoint's iteration first."""

    def __init__(self, path, resume_iteration=None):
        self.path = path
        self.records = []
        if resume_iteration is not None and path.exists():
            self.records = read_log(path, resume_iteration)
        atomic_write_text(path, "".join(strict_json(r) + "\n" for r in self.records))
        self.file = open(path, "a", encoding="utf-8")

    def append(self, record):
        self.records.append(record)
        self.file.write(strict_json(record) + "\n")
        self.file.flush()

    def rewind(self, iteration):
        """After a rollback: keep only the records up to ``iteration``, rewritten atomically."""
        self.file.close()
        self.records = [r for r in self.records if r["iteration"] <= iteration]
        atomic_write_text(self.path, "".join(strict_json(r) + "\n" for r in self.records))
        self.file = open(self.path, "a", encoding="utf-8")

    def close(self):
        self.file.close()


class DiscardLog:
    """RunLog's interface, keeping nothing: the log of a torchrun rank other than 0 (rank 0 writes the run's log)."""
    records = ()

    def append(self, record):
        pass

    def rewind(self, iteration):
        pass

    def close(self):
        pass
