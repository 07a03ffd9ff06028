"""--fid-every: FID during training, logged and plotted, the best checkpoint kept, milestones in the summary."""
import json
import math

import torch

from ganforge.engine.config import TrainConfig
from ganforge.engine.trainer import train

TINY = dict(iterations=9, batch_size=8, kernels="ref", progress=False, log_every=3, sample_every=9, ckpt_every=9,
            fid_samples=50, fid_every=3, fid_every_samples=50, fid_budget=1.0)


def test_fid_every_logs_plots_keeps_the_best_and_records_milestones(tmp_path):
    out = tmp_path / "run"
    summary = train(TrainConfig(out=str(out), **TINY))
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    fid_records = [r for r in records if "fid_during_training" in r]
    assert [r["iteration"] for r in fid_records] == [3, 6, 9]
    curve = summary["fid_curve"]
    assert [p["iteration"] for p in curve] == [3, 6, 9]
    assert [p["fid"] for p in curve] == [r["fid_during_training"] for r in fid_records]
    assert all(math.isfinite(p["fid"]) and p["classes_found"] >= 0 for p in curve)
    # precision and recall come from the same samples and budget as each FID point
    assert all(0 <= p["improved_precision"] <= 1 and 0 <= p["improved_recall"] <= 1 for p in curve)
    seconds = [p["train_seconds"] for p in curve]
    assert seconds == sorted(seconds) and seconds[0] > 0
    best = min(curve, key=lambda p: p["fid"])
    assert summary["best_fid"] == best["fid"] and summary["best_fid_iteration"] == best["iteration"]
    saved = torch.load(out / "checkpoint-best.pt", weights_only=True)
    assert saved["iteration"] == best["iteration"] and saved["fid"] == best["fid"]
    milestones = summary["seconds_to_fid"]
    for key, value in milestones.items():
        threshold = float(key.split("<=")[1])
        first = next((p["train_seconds"] for p in curve if p["fid"] <= threshold), None)
        assert value == first
    assert (out / "fid_curve.png").is_file() and (out / "loss_curve.png").is_file()
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["fid_curve"] == curve


def test_fid_budget_skips_scorings_once_spent(tmp_path):
    """A budget of almost nothing: the first scoring runs (nothing spent yet), every later one is skipped."""
    summary = train(TrainConfig(out=str(tmp_path / "run"), **{**TINY, "fid_budget": 1e-9}))
    assert [p["iteration"] for p in summary["fid_curve"]] == [3]
    assert summary["fid_tracking_seconds"] > 0


def test_fid_every_needs_images(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="2-D points"):
        train(TrainConfig(out=str(tmp_path / "r"), dataset="ring8", **TINY))


def test_scoring_never_changes_the_model_trained_and_resume_stays_exact(tmp_path):
    """Building the FID backbone must not draw from the training RNG: the same seed trains the same G with FID on
    or off, and a run resumed with --fid-every continues exactly as the uninterrupted one."""
    settings = dict(TINY, iterations=6, ckpt_every=3, keep_checkpoints=5)
    train(TrainConfig(out=str(tmp_path / "scored"), **settings))
    train(TrainConfig(out=str(tmp_path / "unscored"), **dict(settings, fid_samples=0, fid_every=0)))
    train(TrainConfig(out=str(tmp_path / "resumed"), **settings), resume=tmp_path / "scored" / "checkpoint-000003.pt")
    whole = torch.load(tmp_path / "scored" / "checkpoint-000006.pt", weights_only=True)["G"]
    for other in ("unscored", "resumed"):
        G = torch.load(tmp_path / other / "checkpoint.pt", weights_only=True)["G"]
        assert all(torch.equal(G[k], whole[k]) for k in whole), other
