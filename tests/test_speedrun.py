"""The speedrun's pieces: the EMA of G samples with BatchNorm statistics of its own weights; the salt-noise count of
the final grid; bf16 where the CPU has AMX. (Each model's defaults, the presets: tests/test_config.py.)"""
import copy

import pytest
import torch

from ganforge.engine import checkpoint as ckpt
from ganforge.engine import train_state
from ganforge.engine.config import TrainConfig
from ganforge.engine.metrics.scores import isolated_pixels
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


def test_isolated_pixels_counts_ink_with_no_ink_around():
    blank = -torch.ones(3, 1, 6, 6)
    blank[0, 0, 2, 2] = 1.0             # alone: 1
    blank[0, 0, 0, 5] = 0.0             # alone in a corner (the border is blank): 1
    blank[1, 0, 1, 1] = blank[1, 0, 2, 2] = 1.0  # diagonal neighbours: 0
    blank[2, 0, 4, 4] = -0.6            # below the ink threshold: 0
    assert isolated_pixels(blank) == pytest.approx(2 / 3)
    assert isolated_pixels(blank, threshold=-0.7) == pytest.approx(3 / 3)
    random = torch.rand(50, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ink = random > -0.5
    padded = torch.nn.functional.pad(ink, (1, 1, 1, 1))
    brute = 0
    for n in range(50):
        for i in range(28):
            for j in range(28):
                if ink[n, 0, i, j] and padded[n, 0, i:i + 3, j:j + 3].sum() == 1:
                    brute += 1
    assert isolated_pixels(random) == pytest.approx(brute / 50)
    with pytest.raises(ValueError, match="grey images"):
        isolated_pixels(torch.zeros(2, 3, 8, 8))


def test_auto_precision_is_bf16_where_the_cpu_has_amx(monkeypatch):
    from ganforge.engine import devices

    monkeypatch.setenv("GANFORGE_CPU_AUTO_PRECISION", "bf16")
    assert devices.resolve_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setenv("GANFORGE_CPU_AUTO_PRECISION", "half")
    with pytest.raises(ValueError, match="fp32 or bf16"):
        devices.resolve_precision("auto", torch.device("cpu"))
    monkeypatch.delenv("GANFORGE_CPU_AUTO_PRECISION")  # the suite sets it: the CPU's own rule below

    monkeypatch.setattr(devices, "cpu_bf16_units", lambda: ["AMX", "AVX512-BF16"])
    assert devices.resolve_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(devices, "cpu_bf16_units", lambda: ["AVX512-BF16"])
    assert devices.resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(devices, "cpu_bf16_units", lambda: [])
    assert devices.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert devices.resolve_precision("fp32", torch.device("cpu")) == "fp32"
