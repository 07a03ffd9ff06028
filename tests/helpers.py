"""What the tests share: the tiny run settings of the fault tests and their digits, and faults planted by
monkeypatching the engine's own functions (the engine keeps no test hooks)."""
import functools

import torch

from ganforge.engine import loop
from ganforge.engine.data import load_dataset

# The fault tests' runs: tiny, on the reference kernels, not scored, so a run takes a fraction of a second.
TINY_CFG = dict(batch_size=8, kernels="ref", fid_samples=0, progress=False, sample_every=1000, seed=5)


@functools.cache
def tiny_digits():
    """The MNIST-5k train split as the tiny runs load it (loaded once per test process)."""
    return load_dataset("mnist5k", split="train", seed=TINY_CFG["seed"])


def poison_d_weight_after(monkeypatch, iteration):
    """Once the run has completed ``iteration`` (counted from 1), set one D weight to NaN, once per run: the
    divergence guard and the rollback are tested on a real non-finite weight. It wraps the loop's run_iteration,
    so the NaN lands where a step would have put it, between two iterations; after a rollback the same iteration
    runs clean."""
    run_iteration = loop.run_iteration
    poisoned = []

    def run_and_poison(session, index):
        run_iteration(session, index)
        if index + 1 == iteration and not poisoned:
            poisoned.append(index)
            with torch.no_grad():
                next(session.state.D.parameters()).view(-1)[0] = float("nan")
    monkeypatch.setattr(loop, "run_iteration", run_and_poison)
