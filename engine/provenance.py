"""How a result was made: the commit of this checkout, the exact command, the date and the versions.

Every results file the project writes (bench results, summary.json of a run, the applications' reports) carries
these, so a figure can be traced to the code and the command that produced it and rerun.
"""
import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch


def git_commit():
    """The checkout's HEAD commit (with "-dirty" when tracked files changed), or None for an installed copy."""
    checkout = Path(__file__).resolve().parent.parent  # engine/ sits at the top of the repository
    if not (checkout / "setup.py").is_file():
        return None
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=checkout,
                                capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def command_line(argv=None):
    """The command that is running, as a user would type it: `ganforge ...` for the console script and
    `python -m MODULE ...` for a module, with no path of this machine in it."""
    argv = list(sys.argv if argv is None else argv)
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        module = spec.name[:-len(".__main__")] if spec.name.endswith(".__main__") else spec.name
        head = ["python", "-m", module]
    else:
        head = [os.path.basename(argv[0]) if argv else "python"]
    return " ".join(shlex.quote(arg) for arg in head + argv[1:])


def provenance():
    """What every results file records of how it was made: the commit, the exact command, when, with what."""
    return {"git_commit": git_commit(), "command": command_line(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "python": platform.python_version()}

