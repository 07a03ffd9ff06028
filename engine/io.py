"""Writing files so that a crash, a kill -9 or a second process never leaves a half-written one behind.

Every file the engine writes whole (checkpoints, summary.json, config.json, exports, classifier weights) goes
through atomic_write: a temporary file unique to this call in the same folder, flushed and fsync'ed, renamed
over the target (atomic on POSIX), then the folder fsync'ed so the rename itself survives a power cut. On any
error the temporary file is removed.
"""
import contextlib
import json
import math
import os
import tempfile
from pathlib import Path


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


def atomic_write(path, write):
    """Call ``write(binary_file)`` on a temporary file, then move it to ``path`` atomically. Returns path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write names no file: name ours
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path, data):
    return atomic_write(path, lambda f: f.write(data))


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
