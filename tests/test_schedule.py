"""The loop's schedule: what falls due after each iteration, from the intervals and the signals alone."""
import signal
from types import SimpleNamespace

from ganforge.engine.config import TrainConfig
from ganforge.engine.distributed import World
from ganforge.engine.schedule import Due, Schedule


class Signals:
    def __init__(self, received=None):
        self.received = received


class LaunchedWorld:
    """A stand-in for torchrun's ranks: counts the agreements (collectives) asked of it."""
    launched = True

    def __init__(self, others_received=0):
        self.others_received, self.agreements = others_received, 0

    def max(self, value):
        self.agreements += 1
        return max(value, self.others_received)


def config(**fields):
    return TrainConfig(**{**dict(iterations=20, log_every=4, sample_every=6, ckpt_every=10, fid_every=0), **fields})


def test_each_interval_falls_due_on_its_multiples_and_the_log_on_the_last_iteration():
    schedule = Schedule(config(iterations=22), World(), Signals(), writes_samples=True, tracks_fid=False)
    due = {i: schedule.after(i) for i in range(1, 23)}
    assert [i for i in due if due[i].log] == [4, 8, 12, 16, 20, 22]
    assert [i for i in due if due[i].samples] == [6, 12, 18]
    assert [i for i in due if due[i].checkpoint] == [10, 20]
    assert not any(d.fid or d.stop is not None for d in due.values())
    assert [i for i in due if due[i].side_work] == [6, 10, 12, 18, 20]
    assert due[5] == Due()


def test_samples_on_the_writing_rank_and_fid_only_when_tracked():
    cfg = config(fid_every=5)
    assert not Schedule(cfg, World(), Signals(), writes_samples=False, tracks_fid=True).after(6).samples
    assert Schedule(cfg, World(), Signals(), writes_samples=False, tracks_fid=True).after(5).fid
    assert not Schedule(cfg, World(), Signals(), writes_samples=True, tracks_fid=False).after(5).fid


def test_a_signal_brings_a_log_record_a_checkpoint_and_the_stop():
    schedule = Schedule(config(), World(), Signals(signal.SIGTERM), writes_samples=True, tracks_fid=False)
    due = schedule.after(3)
    assert due.log and due.checkpoint and due.side_work and due.stop == signal.SIGTERM


def test_under_torchrun_the_ranks_agree_on_a_signal_at_log_intervals_only():
    world = LaunchedWorld(others_received=signal.SIGINT)  # another rank got the signal
    schedule = Schedule(config(), world, Signals(), writes_samples=True, tracks_fid=False)
    assert schedule.after(3) == Due() and world.agreements == 0  # no collective between log records
    assert schedule.after(4).stop == signal.SIGINT and world.agreements == 1
    assert schedule.received_signal(ranks_agree_now=True) == signal.SIGINT and world.agreements == 2


def test_the_schedule_reads_only_the_config_and_the_signals():
    """No tensors: the answer is host arithmetic, so the loop may ask after every iteration."""
    schedule = Schedule(SimpleNamespace(iterations=8, log_every=2, sample_every=3, ckpt_every=4, fid_every=0),
                        World(), Signals(), writes_samples=True, tracks_fid=False)
    assert schedule.after(4) == Due(log=True, checkpoint=True)
