"""What falls due after an iteration: a log record, an FID point, a sample grid, a checkpoint, the stop on a signal.

This is the one place the run's intervals (--log-every, --fid-every, --sample-every, --ckpt-every, --iterations)
are tested. It reads nothing from the device: the answer follows from the iteration number and, for a signal,
from the host (under torchrun, from an agreement between the ranks at log intervals only).
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Due:
    """What the loop does after one iteration: the log record first, then the side work (FID, samples,
    checkpoint, stop). ``stop``: the signal the run stops on, or None."""
    log: bool = False
    fid: bool = False
    samples: bool = False
    checkpoint: bool = False
    stop: int | None = None

    @property
    def side_work(self):
        """Anything beyond the log record: the loop then waits for the device and pauses its clock."""
        return self.fid or self.samples or self.checkpoint or self.stop is not None


class Schedule:
    """One run's intervals and the signals it stops on.

    writes_samples: whether this process writes sample grids (rank 0 alone under torchrun).
    tracks_fid: whether --fid-every is on (FIDTracker then decides whether its time budget allows the point)."""

    def __init__(self, cfg, world, signals, writes_samples, tracks_fid):
        self.cfg, self.world, self.signals = cfg, world, signals
        self.writes_samples, self.tracks_fid = writes_samples, tracks_fid

    def after(self, iteration):
        """What falls due once ``iteration`` iterations are done."""
        cfg = self.cfg
        at_log_interval = iteration % cfg.log_every == 0
        received = self.received_signal(ranks_agree_now=at_log_interval)
        stopping = received is not None
        return Due(log=at_log_interval or iteration == cfg.iterations or stopping,
                   fid=self.tracks_fid and iteration % cfg.fid_every == 0,
                   samples=self.writes_samples and iteration % cfg.sample_every == 0,
                   checkpoint=iteration % cfg.ckpt_every == 0 or stopping,
                   stop=received)

    def received_signal(self, ranks_agree_now=True):
        """The signal (SIGINT/SIGTERM) the run stops on, or None. Under torchrun the ranks agree only where
        ``ranks_agree_now`` (an agreement is a collective, so every rank must reach it), and all of them stop
        after the same iteration; elsewhere a signal waits for the next agreement."""
        if not self.world.launched:
            return self.signals.received
        if not ranks_agree_now:
            return None
        return self.world.max(self.signals.received or 0) or None
