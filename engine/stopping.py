"""How a run ends early: the exceptions train() raises, each carrying the command's exit code, and the one-line
cause of an I/O failure."""
from .data.stream import StreamFailed


class TrainingStopped(Exception):
    """The run stopped early but cleanly (its outputs are consistent); ``exit_code`` is the command's."""
    exit_code = 1


class TrainingDiverged(TrainingStopped):
    def __init__(self, message, iteration):
        super().__init__(message)
        self.iteration = iteration


class RanksLost(TrainingStopped):
    """Under torchrun, the other ranks are gone: the process group is broken, so the process should exit at once
    (``hard_exit``) rather than wait for it to shut down."""
    hard_exit = True


class TrainingFailed(TrainingStopped):
    """An I/O failure during the run (a full disk, no permission, a vanished folder): the newest checkpoint stays
    whole, summary.json says "failed" where it could still be written."""


class TrainingInterrupted(TrainingStopped):
    def __init__(self, message, signum):
        super().__init__(message)
        self.exit_code = 128 + signum


def describe_os_error(exc):
    """One line naming the file an OSError was about and why it failed."""
    if isinstance(exc, StreamFailed):  # a read of the training data: its message names the file and the cause
        return str(exc)
    where = f"{exc.filename}: " if exc.filename else ""
    return f"cannot write the run's files: {where}{exc.strerror or exc}"
