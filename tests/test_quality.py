"""bench.quality: the time-to-quality harness, the peer models rebuilt from PyTorch-GAN, and its command."""
import json
import math

import pytest
import torch

from ganforge.bench import quality
from ganforge.engine.recipes import RECIPES, recipe_settings


@pytest.mark.parametrize("name,size", [("pytorch-gan-wgan_gp", 28), ("pytorch-gan-dcgan", 32)])
def test_peer_models_train_and_sample(name, size):
    trainee = quality.make_trainee(name)
    g_before = [p.detach().clone() for p in trainee.G.parameters()]
    d_before = [p.detach().clone() for p in trainee.D.parameters()]
    for _ in range(5):  # five batches: the WGAN-GP generator steps once, on the fifth
        trainee.step()
    assert any(not torch.equal(a, b) for a, b in zip(g_before, trainee.G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, trainee.D.parameters()))
    images = trainee.samples(7)
    assert images.shape == (7, 1, size, size) and images.abs().max() <= 1
    assert trainee.G.training  # sampling put G back in training mode


def test_rows_are_valid_configs_and_rows_named_like_a_recipe_are_that_recipe():
    for name, settings in quality.QUALITY_ROWS.items():
        quality.TrainConfig(**settings).validate()
    assert set(quality.TOOLBOX) <= set(quality.QUALITY_ROWS)
    assert quality.contender_names("toolbox", "pytorch-gan-dcgan") == [*quality.TOOLBOX, "pytorch-gan-dcgan"]
    assert set(quality.SPEEDRUN) <= set(quality.QUALITY_ROWS) and quality.contender_names("speedrun", "") == [
        *quality.SPEEDRUN]
    assert quality.SHIPPED in quality.QUALITY_ROWS and quality.QUALITY_ROWS[quality.SHIPPED] == {}
    for name in set(quality.QUALITY_ROWS) & set(RECIPES):
        assert quality.QUALITY_ROWS[name] == recipe_settings(name), name
    assert quality.QUALITY_ROWS["default-2026-12-02"] == recipe_settings("speedrun-momentum")
    assert quality.QUALITY_ROWS["mlp-ns"] == recipe_settings("textbook")
    assert quality.contender_names("mlp-r1, dcgan-r1", "") == ["mlp-r1", "dcgan-r1"]


def test_each_row_keeps_the_settings_it_was_measured_with():
    """"default" is the shipped config; "default-<change>" one change to the default of 2026-12-02; the other rows
    BASE with R1 at the gamma of their day (1), whatever the MLP's default gamma is now."""
    shipped = quality.make_trainee("default").cfg
    assert (shipped.beta1, shipped.penalty_weight) == (0.0, 10.0)
    before = quality.make_trainee("default-2026-12-02").cfg
    assert (before.beta1, before.beta2, before.penalty_weight, before.width, before.batch_size) == (
        0.5, 0.999, 1.0, 32, 512)
    changed = quality.make_trainee("default-beta0-r1g10").cfg
    assert (changed.beta1, changed.beta2, changed.penalty_weight, changed.ema) == (0.0, 0.99, 10.0, 0.9995)
    textbook_r1 = quality.make_trainee("mlp-r1").cfg
    assert (textbook_r1.penalty_weight, textbook_r1.beta1, textbook_r1.width) == (1.0, 0.5, 64)
    assert quality.make_trainee("mlp-wgan-gp").cfg.penalty_weight == 10.0


@pytest.mark.slow
def test_command_writes_a_curve_per_contender(tmp_path, capsys, monkeypatch):
    # the reference kernels: the suite's Triton interpreter would make this CPU run crawl
    monkeypatch.setitem(quality.QUALITY_ROWS, "mlp-ns", {**quality.QUALITY_ROWS["mlp-ns"], "kernels": "ref"})
    out = tmp_path / "q.json"
    code = quality.main(["--out", str(out), "--recipes", "mlp-ns", "--peers", "pytorch-gan-dcgan", "--marks", "1,2",
                         "--fid-samples", "100", "--no-progress"])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["schema"] == quality.SCHEMA and data["marks_s"] == [1, 2]
    assert [c["name"] for c in data["curves"]] == ["mlp-ns", "pytorch-gan-dcgan"]
    for curve in data["curves"]:
        first, second = curve["points"]
        # each mark is reached (an iteration may overshoot it, on a loaded machine past the next mark too)
        assert 1 <= first["train_seconds"] <= second["train_seconds"] and second["train_seconds"] >= 2
        assert 0 < first["iterations"] <= second["iterations"]
        assert all(math.isfinite(p["fid"]) and len(p["class_shares"]) == 10 for p in curve["points"])
    assert "| mlp-ns | recipe |" in capsys.readouterr().out
    assert quality.main(["--out", str(out), "--recipes", "nope", "--peers", ""]) == 2
