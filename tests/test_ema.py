"""The EMA of G: it samples with BatchNorm statistics of its own activations, recomputed only after an update,
and checkpoints carry them."""
import copy

import pytest
import torch

from ganforge.engine import checkpoint as ckpt
from ganforge.engine import train_state
from ganforge.engine.config import TrainConfig
from ganforge.engine.session import build_session, run_iteration


def _trained_session(**overrides):
    cfg = TrainConfig(batch_size=16, kernels="ref", ema=0.9, progress=False, fid_samples=0, **overrides)
    session = build_session(cfg)
    for i in range(5):
        run_iteration(session, i)
    return session


def _norm_inputs(G, z, labels):
    """The input of each BatchNorm layer of G in train mode on (z, labels), in module order."""
    seen, hooks = [], []
    for module in G.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            hooks.append(module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone())))
    G.train()
    with torch.no_grad():
        G(z, labels)
    G.eval()
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "conditional"])
def test_ema_statistics_are_its_own_activations_over_fixed_latents(conditional):
    """Each running mean is the mean, and each running variance the mean of the unbiased per-batch variances, of
    the EMA's own pre-BatchNorm activations over EMA_NORM_SAMPLES latents from the fixed seed, drawn as the
    method draws them; the live G's statistics (which differ) are left alone."""
    session = _trained_session(conditional=conditional)
    state = session.state
    live = [b.clone() for b in state.G.buffers()]
    sampler = state.sampling_generator()
    assert sampler is state.G_ema and not sampler.training
    norms = [m for m in sampler.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.momentum == 0.1 for m in norms)  # restored after the cumulative average
    recomputed = [(m.running_mean.clone(), m.running_var.clone()) for m in norms]
    probe = copy.deepcopy(sampler)  # train-mode forwards below move a BatchNorm's statistics
    gen = torch.Generator().manual_seed(train_state.EMA_NORM_SEED)
    batches = []
    for _ in range(train_state.EMA_NORM_SAMPLES // train_state.EMA_NORM_BATCH):
        z = torch.randn(train_state.EMA_NORM_BATCH, state.cfg.z_dim, generator=gen)
        labels = torch.randint(0, 10, (train_state.EMA_NORM_BATCH,), generator=gen) if conditional else None
        batches.append(_norm_inputs(probe, z, labels))
    for k, (running_mean, running_var) in enumerate(recomputed):
        dims = [0] + list(range(2, batches[0][k].dim()))
        means = torch.stack([b[k].mean(dim=dims) for b in batches])
        variances = torch.stack([b[k].var(dim=dims, unbiased=True) for b in batches])
        torch.testing.assert_close(running_mean, means.mean(0), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(running_var, variances.mean(0), rtol=1e-5, atol=1e-6)
    for before, after in zip(live, state.G.buffers()):
        assert torch.equal(before, after)
    live_means = [m.running_mean for m in state.G.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert not all(torch.allclose(a, b) for a, (b, _) in zip(live_means, recomputed))


def test_recomputing_repeats_exactly_only_after_an_update_and_leaves_the_training_streams_alone():
    session = _trained_session()
    state = session.state
    rng = torch.get_rng_state()
    first = [b.clone() for b in state.sampling_generator().buffers()]
    state.ema_norm_updates = None  # forget it was done: recompute from scratch
    second = [b.clone() for b in state.sampling_generator().buffers()]
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    forwards = []
    hook = state.G_ema.register_forward_hook(lambda *args: forwards.append(1))
    state.sampling_generator()
    assert not forwards  # the EMA has not moved since: nothing to recompute
    run_iteration(session, 5)
    state.sampling_generator()
    assert len(forwards) == train_state.EMA_NORM_SAMPLES // train_state.EMA_NORM_BATCH
    hook.remove()


def test_a_checkpoint_holds_the_ema_with_its_own_statistics(tmp_path):
    """What `ganforge sample` loads from a checkpoint samples as the run's own evaluation did."""
    session = _trained_session()
    ckpt.save_run_checkpoint(tmp_path, session.state, 5, (1, 28, 28), 0, keep=1)
    saved = ckpt.load_checkpoint(tmp_path / "checkpoint.pt")["G_ema"]
    own = session.state.sampling_generator().state_dict()
    assert all(torch.equal(saved[k], own[k]) for k in own)
    assert not torch.equal(saved["net.0.norm.running_mean"], session.state.G.state_dict()["net.0.norm.running_mean"])
