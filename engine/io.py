"""Writing files so that a crash, a kill -9 or a second process never leaves a half-written one behind.

Every file the engine writes whole (checkpoints, summary.json, config.json, exports, classifier weights) goes
through atomic_write: a temporary file unique to this call in the same folder, flushed and fsync'ed, renamed
over the target (atomic on POSIX), then the folder fsync'ed so the rename itself survives a power cut. On any
exit before the rename (an error, or a signal the command turned into an exception, engine.signals) the
temporary file is removed, and an error names the target file, never the temporary one.
"""
import contextlib
import io
import json
import math
import os
import tempfile
from pathlib import Path

TEMPORARY_NAME_KEEPS = 200  # characters of a target's name kept in its temporary file's name


def fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a folder; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_prefix(path):
    """How the names of ``path``'s temporary files start: a dot and its name, cut short enough that the random part
    and ".tmp" still fit in a file name (255 bytes) when ``path``'s own name is near that limit."""
    return f".{path.name[:TEMPORARY_NAME_KEEPS]}."


@contextlib.contextmanager
def temporary_beside(path):
    """The path of a new, empty, unique temporary file (.NAME.XXXX.tmp) in ``path``'s folder; removed when the
    block exits in any way, unless the block has renamed it into place."""
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        os.close(fd)
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def naming_target(exc, path, tmp_prefix):
    """``exc`` (an OSError) naming ``path`` where it named no file or the temporary file beside it."""
    named = exc.filename
    if named is not None and not Path(os.fsdecode(named)).name.startswith(tmp_prefix):
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def atomic_write(path, write):
    """Call ``write(binary_file)`` on a temporary file, then move it to ``path`` atomically. Returns path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with temporary_beside(path) as tmp:
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it the usual permissions
            os.replace(tmp, path)
    except OSError as exc:  # a user reads the file they asked for, not our temporary one
        named = naming_target(exc, path, temporary_prefix(path))
        if named is exc:
            raise
        raise named from exc
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path, data):
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_torch(path, obj):
    """torch.save ``obj`` to ``path`` atomically. It is serialised in memory first: torch's writer turns a failed
    write (a full disk) into a RuntimeError, while a plain write of the bytes fails as the OSError it is."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getbuffer())


def atomic_write_text(path, text):
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def finite_for_json(value):
    """``value`` with every non-finite float (NaN, inf), however deeply nested, replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_for_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_for_json(v) for v in value]
    return value


def strict_json(obj, indent=None):
    """JSON text that every parser accepts: non-finite floats (NaN, inf) become null."""
    return json.dumps(finite_for_json(obj), indent=indent, allow_nan=False)


def atomic_write_json(path, obj, indent=2):
    return atomic_write_text(path, strict_json(obj, indent=indent) + "\n")


def read_json_document(path, schema, list_field, what):
    """A JSON object of ``schema`` holding a list under ``list_field``; a file that cannot be read, is not JSON or
    is another kind of document raises ValueError naming ``path`` and ``what`` it should have been."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {what} {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != schema or not isinstance(data.get(list_field), list):
        raise ValueError(f"{path} is not a {what} (schema {schema!r} with a {list_field} list)")
    return data
