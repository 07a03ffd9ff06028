"""A run folder is owned by one run at a time, and its files are never silently replaced.

RunDir.open() takes an exclusive lock (fcntl.flock on OUT/run.lock, released by the kernel when the process
ends, even by kill -9), refuses a folder that already holds a run unless asked to resume it or to overwrite
it, and removes temporary files left by a killed writer (engine.io names them .NAME.XXXX.tmp).
"""
import contextlib
import datetime
import fcntl
import json
import os
import socket
from pathlib import Path

LOCK_NAME = "run.lock"
STAGING = ".staging"  # where a checkpoint is written whole before it is published (engine.checkpoint)
# What a run writes into its folder; any of these marks the folder as holding a run.
RUN_FILES = ("checkpoint.pt", "log.jsonl", "summary.json")
RUN_GLOBS = ("checkpoint-*.pt", "samples_*.png", "loss_curve.png", "fid_curve.png", "config.json", *RUN_FILES)


class RunDirError(ValueError):
    """The run folder cannot be used: not a folder, not writable, in use, or holding another run."""


class RunDir:
    def __init__(self, path):
        self.path = Path(path)
        self._lock_file = None
        self._replace_previous = False

    def open(self, resume=False, overwrite=False):
        """Lock the folder for this process; refuse to reuse a run folder without ``resume`` or ``overwrite``."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"--out {self.path} is a file, not a folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            lock_file = open(self.path / LOCK_NAME, "a+")
        except OSError as exc:
            raise RunDirError(f"--out {self.path} cannot be written ({exc.strerror})") from None
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = _describe_holder(lock_file.read())
            lock_file.close()
            raise RunDirError(f"--out {self.path} is in use by another run ({holder}); wait for it to finish or "
                              "choose another --out") from None
        self._lock_file = lock_file
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                    "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}))
        lock_file.flush()
        try:
            self._check_reuse(resume, overwrite)
        except BaseException:
            self.close()
            raise
        self.remove_stale_temp_files()
        return self

    def _check_reuse(self, resume, overwrite):
        for name in RUN_FILES:
            if (self.path / name).is_dir():
                raise RunDirError(f"--out {self.path}: {name} is a folder, where the run keeps a file of that name; "
                                  "move it away or choose another --out")
        existing = sorted(p.name for p in self.path.iterdir() if p.name in RUN_FILES or p.match("checkpoint-*.pt"))
        if not existing or resume:
            return
        if not overwrite:
            raise RunDirError(f"--out {self.path} already holds a run ({', '.join(existing[:3])}); continue it with "
                              f"--resume {self.path}, replace it with --overwrite, or choose another --out")
        self._replace_previous = True

    def clear_previous_run(self):
        """--overwrite: the old run's outputs go once the new run starts, so nothing of it is mixed in."""
        if self._replace_previous:
            for pattern in RUN_GLOBS:
                for old in self.path.glob(pattern):
                    old.unlink()
            self._replace_previous = False

    def remove_stale_temp_files(self):
        """Temporary files of a killed writer; safe to remove while this process holds the lock. A checkpoint left
        in .staging/ was either never published or is already checkpoint.pt (engine.checkpoint.save_run_checkpoint)."""
        for tmp in [*self.path.glob(".*.tmp"), *(self.path / STAGING).glob("*")]:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        with contextlib.suppress(OSError):
            (self.path / STAGING).rmdir()

    def taken_away(self):
        """Why this process no longer holds its run folder, or None while it does: the folder was removed or moved,
        or its run.lock removed or replaced (the lock then guards nothing). One stat, cheap at every log record."""
        if self._lock_file is None:
            return None
        lock = self.path / LOCK_NAME
        if not self.path.is_dir():
            return f"the run folder {self.path} was removed or moved away while the run was going on"
        try:
            on_disk = os.stat(lock)
        except FileNotFoundError:
            return f"{lock} was removed while the run was going on: the folder is no longer locked for it"
        held = os.fstat(self._lock_file.fileno())
        if (on_disk.st_dev, on_disk.st_ino) != (held.st_dev, held.st_ino):
            return f"{lock} was replaced while the run was going on: the folder is no longer this run's"
        return None

    def close(self):
        if self._lock_file is not None:
            self._lock_file.close()  # closing the descriptor releases the flock
            self._lock_file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _describe_holder(text):
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown: the lock is held but its owner has not written its details yet"
