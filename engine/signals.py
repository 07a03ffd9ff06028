"""The signal guard that lets a run stop cleanly: the first SIGINT/SIGTERM asks the loop to finish its step and
save; a second one exits at once. Every other command turns SIGTERM into an exception (terminate_raises), as
Python does SIGINT, so its ``finally`` blocks run and no temporary file outlives it."""
import contextlib
import os
import signal
import sys
import threading


class SignalGuard:
    """SIGINT/SIGTERM set ``received`` so the loop can finish its step and save; a second one exits at once."""

    def __init__(self):
        self.received = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received is not None:
            print(f"ganforge: {signal.Signals(signum).name} again: exiting now without saving", file=sys.stderr)
            os._exit(128 + signum)
        self.received = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread. A BaseException, like KeyboardInterrupt: ``except Exception`` lets it
    through."""
    exit_code = 128 + signal.SIGTERM


@contextlib.contextmanager
def terminate_raises():
    """Within the block, SIGTERM raises Terminated in this process (a forked child still dies of it at once)."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return
    owner = os.getpid()

    def raise_terminated(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
