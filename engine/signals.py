"""The signal guard that lets a run stop cleanly: the first SIGINT/SIGTERM asks the loop to finish its step and
save; a second one exits at once."""
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
