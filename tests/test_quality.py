"""bench.quality: the time-to-quality harness, the peer models rebuilt from PyTorch-GAN, its command, and the study
grid (bench/studies/quality_grid.py, not shipped) that runs the same measurement over the searches' rows."""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from ganforge.bench import quality
from ganforge.bench.harness import main as bench_main
from ganforge.engine.recipes import RECIPES, recipe_settings


def load_study(name):
    """A module of bench/studies/, which is not a package: loaded from its file."""
    path = Path(__file__).resolve().parents[1] / "bench" / "studies" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"study_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


grid = load_study("quality_grid")


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
    for name, settings in grid.QUALITY_ROWS.items():
        quality.TrainConfig(**settings).validate()
    assert set(grid.TOOLBOX) <= set(grid.QUALITY_ROWS)
    assert quality.contender_names("toolbox", "pytorch-gan-dcgan", grid.GROUPS) == [*grid.TOOLBOX,
                                                                                   "pytorch-gan-dcgan"]
    assert set(grid.SPEEDRUN) <= set(grid.QUALITY_ROWS) and quality.contender_names("speedrun", "", grid.GROUPS) == [
        *grid.SPEEDRUN]
    assert quality.SHIPPED in grid.QUALITY_ROWS and grid.QUALITY_ROWS[quality.SHIPPED] == {}
    for name in set(grid.QUALITY_ROWS) & set(RECIPES):
        assert grid.QUALITY_ROWS[name] == recipe_settings(name), name
    assert grid.QUALITY_ROWS["default-2026-12-02"] == recipe_settings("speedrun-momentum")
    assert grid.QUALITY_ROWS["mlp-ns"] == recipe_settings("textbook")
    assert quality.contender_names("mlp-r1, dcgan-r1", "") == ["mlp-r1", "dcgan-r1"]
    # the shipped command trains the user recipes, each exactly as `ganforge train --recipe NAME` does
    assert quality.RECIPE_ROWS == {name: recipe_settings(name) for name in RECIPES}


def test_each_row_keeps_the_settings_it_was_measured_with():
    """"default" is the shipped config; "default-<change>" one change to the default of 2026-12-02; the other rows
    BASE with R1 at the gamma of their day (1), whatever the MLP's default gamma is now."""
    shipped = quality.make_trainee("default", rows=grid.QUALITY_ROWS).cfg
    assert (shipped.beta1, shipped.penalty_weight) == (0.0, 10.0)
    before = quality.make_trainee("default-2026-12-02", rows=grid.QUALITY_ROWS).cfg
    assert (before.beta1, before.beta2, before.penalty_weight, before.width, before.batch_size) == (
        0.5, 0.999, 1.0, 32, 512)
    changed = quality.make_trainee("default-beta0-r1g10", rows=grid.QUALITY_ROWS).cfg
    assert (changed.beta1, changed.beta2, changed.penalty_weight, changed.ema) == (0.0, 0.99, 10.0, 0.9995)
    textbook_r1 = quality.make_trainee("mlp-r1", rows=grid.QUALITY_ROWS).cfg
    assert (textbook_r1.penalty_weight, textbook_r1.beta1, textbook_r1.width) == (1.0, 0.5, 64)
    assert quality.make_trainee("mlp-wgan-gp", rows=grid.QUALITY_ROWS).cfg.penalty_weight == 10.0


@pytest.mark.slow
def test_command_writes_a_curve_per_contender(tmp_path, capsys, monkeypatch):
    # the reference kernels: the suite's Triton interpreter would make this CPU run crawl
    monkeypatch.setitem(quality.RECIPE_ROWS, "textbook", {**quality.RECIPE_ROWS["textbook"], "kernels": "ref"})
    out = tmp_path / "q.json"
    code = bench_main(["quality", "--out", str(out), "--recipes", "textbook", "--peers", "pytorch-gan-dcgan",
                       "--marks", "1,2", "--fid-samples", "100", "--no-progress", "--history", "off"])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["schema"] == quality.SCHEMA and data["marks_s"] == [1, 2]
    assert [c["name"] for c in data["curves"]] == ["textbook", "pytorch-gan-dcgan"]
    for curve in data["curves"]:
        first, second = curve["points"]
        # each mark is reached (an iteration may overshoot it, on a loaded machine past the next mark too)
        assert 1 <= first["train_seconds"] <= second["train_seconds"] and second["train_seconds"] >= 2
        assert 0 < first["iterations"] <= second["iterations"]
        assert all(math.isfinite(p["fid"]) and len(p["class_shares"]) == 10 for p in curve["points"])
    assert "| textbook | recipe |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown contender 'mlp-ns'"):  # a study row is not a shipped recipe
        bench_main(["quality", "--out", str(out), "--recipes", "mlp-ns", "--peers", ""])
    assert grid.main(["--out", str(out), "--recipes", "nope", "--peers", ""]) == 2
