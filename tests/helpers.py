"""Faults and probes shared by the tests, planted by monkeypatching the engine's own functions (the engine keeps
no test hooks)."""
import torch

from ganforge.engine import loop


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
