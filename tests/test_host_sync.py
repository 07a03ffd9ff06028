"""Between two log records the training loop reads nothing back from the device and never waits for it.

The real `ganforge train` loop runs while every path by which a tensor's value reaches the host is counted
(Tensor.item, tolist, float/int/bool, numpy, cpu) and so is every wait for the device (IntervalTimer.sync, the
loop's only one). Each count is attributed to where it happened: inside a training step, or in the loop after
its k-th iteration. The log record may read the device (one wait, two host reads: the interval's statistics and
the divergence flag); every other iteration must read nothing. On a GPU a read is a host sync that stops the CPU
from queueing the next replay while the GPU works; on the CPU the same code paths are counted.
"""
import collections

import pytest
import torch

from ganforge.engine import loop, trainer
from ganforge.engine.config import TrainConfig
from ganforge.engine.data import Dataset

ITERATIONS, LOG_EVERY = 24, 8
READS_PER_LOG = 2  # the interval's statistics and the divergence flag, one device->host copy each
HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "numpy", "cpu")


def random_digits(n=256, seed=11):
    gen = torch.Generator().manual_seed(seed)
    return Dataset(torch.rand((n, 1, 28, 28), generator=gen) * 2 - 1, torch.randint(0, 10, (n,), generator=gen), 10,
                   "random")


class Counter:
    """Counts host reads and device waits, each under the place it happened."""

    def __init__(self):
        self.iteration = 0      # iterations the loop has completed
        self.in_step = False
        self.step_reads = collections.Counter()             # read name -> count, inside the steps
        self.loop_reads = collections.defaultdict(list)     # completed iterations -> read names, in the loop
        self.waits = collections.Counter()                   # completed iterations -> device waits

    def read(self, name):
        if self.in_step:
            self.step_reads[name] += 1
        else:
            self.loop_reads[self.iteration].append(name)


@pytest.fixture
def counter(monkeypatch):
    counter = Counter()
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            counter.read(_name)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)

    run_iteration = loop.run_iteration

    def counted_iteration(session, iteration):
        counter.in_step = True
        try:
            run_iteration(session, iteration)
        finally:
            counter.in_step = False
            counter.iteration += 1
    monkeypatch.setattr(loop, "run_iteration", counted_iteration)

    def counted_sync(self):
        counter.waits[counter.iteration] += 1
    monkeypatch.setattr(loop.IntervalTimer, "sync", counted_sync, raising=False)
    return counter


@pytest.mark.parametrize("fields", [
    dict(),  # the default recipe: MLP GAN, R1 through the explicit input gradient on every 4th D step, Adam
    dict(loss="wgan", penalty="wgan-gp", n_critic=5),
    dict(conditional=True, ema=0.99, ema_rampup=0.05, augment="translation", ada_target=0.6, optimizer="rmsprop"),
    # the toolbox: RpGAN + R1 + R2, spectral norm's power iteration, LeCam's moving averages, feature matching
    dict(model="dcgan", width=4, loss="rpgan", penalty="r1+r2", spectral_norm=True, lecam=0.3, feature_matching=1.0),
], ids=["default", "wgan-gp-n5", "cgan-ema-ada-rmsprop", "toolbox"])
def test_no_host_read_between_log_records(tmp_path, counter, fields):
    cfg = TrainConfig(iterations=ITERATIONS, log_every=LOG_EVERY, sample_every=10**6, ckpt_every=10**6,
                      batch_size=16, fid_samples=0, progress=False, kernels="ref", device="cpu", out=str(tmp_path),
                      **fields)
    trainer.train(cfg, dataset=random_digits())
    assert counter.iteration == ITERATIONS
    assert not counter.step_reads, f"the steps read the device: {dict(counter.step_reads)}"
    # The last iteration is left out: the run's final checkpoint, samples and summary read the device after it.
    for k in range(1, ITERATIONS):
        expected = READS_PER_LOG if k % LOG_EVERY == 0 else 0
        assert len(counter.loop_reads[k]) == expected, (k, counter.loop_reads[k])
        assert counter.waits[k] == (1 if k % LOG_EVERY == 0 else 0), (k, counter.waits[k])


def test_side_work_waits_for_the_device_only_where_it_is_due(tmp_path, counter):
    """Samples and checkpoints between log records: the device is waited for on those iterations alone."""
    cfg = TrainConfig(iterations=ITERATIONS, log_every=LOG_EVERY, sample_every=6, ckpt_every=9, batch_size=16,
                      fid_samples=0, progress=False, kernels="ref", device="cpu", out=str(tmp_path))
    trainer.train(cfg, dataset=random_digits())
    for k in range(1, ITERATIONS):
        due = (k % LOG_EVERY == 0) + (k % 6 == 0 or k % 9 == 0)
        assert counter.waits[k] == due, (k, counter.waits[k])
        if not due:
            assert counter.loop_reads[k] == [], (k, counter.loop_reads[k])
