"""Editing real images through a conditional G, and the k-shot augmentation study."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganforge.cli import main
from ganforge.engine.apps.augment_study import StudyConfig, fit, k_shot, mean_ci, study_sets, t_quantile_975
from ganforge.engine.config import TrainConfig
from ganforge.engine.data import DataError, Dataset, load_dataset
from ganforge.engine.apps.editing.class_edits import edit_study
from ganforge.engine.apps.editing.digit_measures import slant, stroke_thickness
from ganforge.engine.apps.editing.encoder import decode, encode, feature_model, train_encoder
from ganforge.engine.apps.editing.inputs import EditError, check_class, check_images, load_conditional_generator
from ganforge.engine.trainer import train


def _tiny_run(out, conditional):
    train(TrainConfig(iterations=30, batch_size=32, conditional=conditional, kernels="ref", progress=False,
                      out=str(out), fid_samples=0, log_every=30, sample_every=100, ckpt_every=100))
    return out / "checkpoint.pt"


@pytest.fixture(scope="module")
def cgan(tmp_path_factory):
    return _tiny_run(tmp_path_factory.mktemp("cgan"), conditional=True)


@pytest.fixture(scope="module")
def generated(cgan):
    """Images G made itself, with the codes and classes that made them: encoding must find them again."""
    G, _, num_classes = load_conditional_generator(cgan, kernels="ref")
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(12, G.z_dim, generator=gen) * 0.8
    labels = torch.arange(12) % num_classes
    return G, z, labels, decode(G, z, labels)


def _bar(width, shear=0.0, size=28):
    """A vertical bar of ``width`` pixels, sheared so that its top moves ``shear`` pixels right per row up."""
    image = -torch.ones(1, 1, size, size)
    for row in range(4, size - 4):
        centre = size / 2 + shear * (size / 2 - row)
        left = int(round(centre - width / 2))
        image[0, 0, row, left:left + width] = 1.0
    return image


def test_attributes_measure_thickness_and_slant_of_drawn_bars():
    thickness = stroke_thickness(torch.cat([_bar(2), _bar(4), _bar(6)]))
    assert thickness.tolist() == pytest.approx([2, 4, 6], rel=0.3)
    assert thickness[0] < thickness[1] < thickness[2]
    slants = slant(torch.cat([_bar(3, -0.3), _bar(3, 0.0), _bar(3, 0.3)]))
    assert slants[1].abs() < 0.02
    assert slants[0] == pytest.approx(-0.3, abs=0.05) and slants[2] == pytest.approx(0.3, abs=0.05)


def test_encoding_a_generated_image_recovers_it(generated):
    G, z_true, labels, images = generated
    classifier = feature_model()
    z = encode(G, images, labels, steps=150, lr=0.1, classifier=classifier, prior_weight=0.0, progress=False)
    pixel_error = (decode(G, z, labels) - images).pow(2).flatten(1).mean(1)
    # from the best of 16 random codes to nearly the image G drew: far below what a random code gives
    random_error = (decode(G, torch.randn_like(z), labels) - images).pow(2).flatten(1).mean(1)
    assert pixel_error.max() < 0.01
    assert pixel_error.mean() < 0.05 * random_error.mean()


def test_an_encoder_trained_on_g_starts_closer_than_chance(cgan, tmp_path):
    encoder, path, info = train_encoder(cgan, iterations=40, batch_size=16, lr=3e-3, real_weight=0.0,
                                        kernels="ref", out=tmp_path / "enc.pt", progress=False)
    assert path.is_file() and info["iterations"] == 40
    G, _, num_classes = load_conditional_generator(cgan, kernels="ref")
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(64, G.z_dim, generator=gen)
    labels = torch.arange(64) % num_classes
    images = decode(G, z, labels)
    with torch.no_grad():
        guess = encoder(images, labels)
    error = (decode(G, guess, labels) - images).pow(2).mean()
    random_error = (decode(G, torch.randn(64, G.z_dim, generator=gen), labels) - images).pow(2).mean()
    assert error < 0.7 * random_error  # its guess already decodes closer than a random code


def test_editing_to_the_source_class_keeps_the_image(generated):
    G, _, labels, images = generated
    report, grid = edit_study(G, 10, images, labels, steps=100, strengths=(-2, 0, 2), classifier=feature_model(),
                              judge=False, progress=False, lr=0.1, direction_samples=500)
    own_class = grid["class_edits"][torch.arange(len(labels)), labels]
    torch.testing.assert_close(own_class, grid["recon"])
    assert (own_class - images).pow(2).flatten(1).mean(1).max() < 0.02
    assert report["reconstruction"]["pixel_mse"] < 0.02
    assert set(report["attributes"]) == {"thickness", "slant"}
    for entry in report["attributes"].values():
        assert len(entry["mean"]) == 3 and -1 <= entry["per_image_rank_correlation"] <= 1


def test_edit_command_writes_grid_and_report(cgan, tmp_path, capsys):
    out = tmp_path / "edit"
    assert main(["edit", "--ckpt", str(cgan), "--count", "12", "--steps", "5", "--rows", "3", "--out", str(out),
                 "--kernels", "ref", "--no-progress"]) == 0
    report = json.loads((out / "edit.json").read_text())
    assert report["images"] == 12 and report["classifier_judges_classes"]
    for key in ("pixel_mse", "feature_distance", "class_kept"):
        assert math.isfinite(report["reconstruction"][key])
    assert report["class_edit"]["pairs"] == 12 * 9 and 0 <= report["class_edit"]["success"] <= 1
    assert set(report["style_kept"]) == {"thickness", "slant"}
    columns = len(report["grid_columns"])
    assert columns == 2 + 10 + 4
    assert Image.open(out / "edit_grid.png").size == (columns * 30 + 2, 3 * 30 + 2)


def test_edit_errors_are_one_clear_line(cgan, tmp_path, capsys):
    def run(*args):
        code = main(["edit", "--out", str(tmp_path / "o"), "--kernels", "ref", "--no-progress", *args])
        return code, capsys.readouterr().err

    code, err = run("--ckpt", str(tmp_path / "missing.pt"))
    assert code == 2 and "checkpoint not found" in err
    unconditional = _tiny_run(tmp_path / "uncond", conditional=False)
    code, err = run("--ckpt", str(unconditional))
    assert code == 2 and "unconditional" in err
    code, err = run("--ckpt", str(cgan), "--count", "4", "--label", "12")
    assert code == 2 and "out of range" in err
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(tmp_path / "big.png")
    code, err = run("--ckpt", str(cgan), "--input", str(tmp_path / "big.png"), "--label", "3")
    assert code == 2 and "1x32x32" in err and "1x28x28" in err
    Image.fromarray(np.zeros((28, 28, 3), dtype=np.uint8)).save(tmp_path / "colour.png")
    code, err = run("--ckpt", str(cgan), "--input", str(tmp_path / "colour.png"), "--label", "3")
    assert code == 2 and "3x28x28" in err
    code, err = main(["train-encoder", "--ckpt", str(unconditional), "--iterations", "1"]), capsys.readouterr().err
    assert code == 2 and "unconditional" in err
    (tmp_path / "empty.pt").write_bytes(b"")
    code, err = run("--ckpt", str(cgan), "--encoder", str(tmp_path / "empty.pt"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "is empty (0 bytes)" in err, err
    torch.save({"format": "x", "obj": Path(".")}, tmp_path / "object.pt")  # an object weights_only refuses
    code, err = run("--ckpt", str(cgan), "--encoder", str(tmp_path / "object.pt"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "holds objects other than tensors" in err, err
    assert "weights_only" not in err
    with pytest.raises(EditError, match="out of range"):
        check_class(-1, 10)
    with pytest.raises(EditError, match="generator makes"):
        check_images(torch.zeros(2, 1, 28, 27), (1, 28, 28))


def test_edit_reads_a_single_grey_image_of_the_right_size(cgan, tmp_path, capsys):
    digit = load_dataset("mnist5k", split="test").images[0, 0]
    Image.fromarray(((digit + 1) * 127.5).round().byte().numpy()).save(tmp_path / "digit.png")
    out = tmp_path / "one"
    assert main(["edit", "--ckpt", str(cgan), "--input", str(tmp_path / "digit.png"), "--steps", "2",
                 "--out", str(out), "--kernels", "ref", "--no-progress"]) == 0
    assert json.loads((out / "edit.json").read_text())["images"] == 1


def test_study_classifier_training_is_deterministic_under_a_seed():
    data = k_shot(load_dataset("mnist5k", split="train"), 3, seed=0)
    cfg = StudyConfig(classifier_steps=8, batch_size=16, progress=False)
    extra = (torch.rand(40, 1, 28, 28) * 2 - 1, torch.arange(40) % 10)

    def weights(seed):
        model = fit(cfg, data, seed, shift=True, extra=extra)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    torch.testing.assert_close(weights(1), weights(1), rtol=0, atol=0)
    assert not torch.equal(weights(1), weights(2))


def test_k_shot_draws_k_per_class_and_refuses_too_few():
    pool = load_dataset("mnist5k", split="train")
    chosen = k_shot(pool, 4, seed=5)
    assert torch.bincount(chosen.labels, minlength=10).tolist() == [4] * 10
    assert torch.equal(chosen.images, k_shot(pool, 4, seed=5).images)
    small = Dataset(pool.images[:30], pool.labels[:30], 10, "mnist5k")
    with pytest.raises(DataError, match="cannot draw 20 per class"):
        k_shot(small, 20, seed=0)


def test_study_sets_hold_out_a_stratified_fifth_of_a_one_set_dataset(tmp_path):
    images = np.random.randint(0, 255, size=(50, 12, 12, 3), dtype=np.uint8)
    np.savez(tmp_path / "set.npz", images=images, labels=np.arange(50) % 5)
    train_set, test_set = study_sets(StudyConfig(dataset="npy", data_path=str(tmp_path / "set.npz")))
    assert len(train_set) == 40 and len(test_set) == 10 and train_set.images.shape[1:] == (3, 12, 12)
    assert torch.bincount(test_set.labels).tolist() == [2] * 5
    np.savez(tmp_path / "flat.npz", images=np.zeros((20, 12, 10), dtype=np.uint8), labels=np.arange(20) % 2)
    with pytest.raises(DataError, match="square"):
        study_sets(StudyConfig(dataset="npy", data_path=str(tmp_path / "flat.npz")))


def test_confidence_interval_uses_student_t():
    # published two-sided 95% quantiles of Student's t (inside the table and beyond it)
    for df, quantile in ((1, 12.706), (4, 2.776), (30, 2.042), (45, 2.0141), (200, 1.9719)):
        assert t_quantile_975(df) == pytest.approx(quantile, abs=2e-3)
    values = [0.61, 0.64, 0.58, 0.66]
    result = mean_ci(values)
    half = 3.182 * np.std(values, ddof=1) / 2  # t(0.975, 3) * standard error of 4 values
    assert result["mean"] == pytest.approx(0.6225)
    assert result["ci95"] == pytest.approx([0.6225 - half, 0.6225 + half])
    assert mean_ci([0.5])["ci95"] is None


@pytest.mark.slow
def test_augment_study_quick_writes_report_and_plot(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["augment-study", "--quick", "--out", str(out), "--kernels", "ref", "--no-progress"]) == 0
    report = json.loads((out / "study.json").read_text())
    entry = report["summary"]["2"]
    assert set(entry["variants"]) == {"real", "real+shift", "real+gan", "real+shift+gan", "real+shift+gan-filtered"}
    assert "real+gan - real" in entry["differences"] and entry["best_gan_variant"].endswith(("gan", "filtered"))
    assert all(0 <= v["mean"] <= 1 for v in entry["variants"].values())
    assert Image.open(out / "study.png").size[0] > 100
    assert main(["augment-study", "--quick", "--variants", "real,bogus", "--out", str(out)]) == 2
    assert "unknown variants" in capsys.readouterr().err


def test_augment_study_runs_on_colour_images_of_another_size(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 3
    images = rng.integers(0, 60, size=(60, 16, 16, 3), dtype=np.uint8)
    images[np.arange(60), :, :, labels] += 150  # each class its own colour: learnable from a few images
    np.savez(tmp_path / "colour.npz", images=images, labels=labels)
    out = tmp_path / "study"
    assert main(["augment-study", "--quick", "--dataset", "npy", "--data-path", str(tmp_path / "colour.npz"),
                 "--variants", "real,real+gan", "--out", str(out), "--kernels", "ref", "--no-progress"]) == 0
    report = json.loads((out / "study.json").read_text())
    assert report["held_out_size"] == 12 and report["summary"]["2"]["variants"]["real"]["mean"] > 0.5


@pytest.mark.slow
def test_augment_study_on_cifar10_files_uses_the_colour_classifier(tmp_path):
    """The study's CIFAR path end to end, from batches in the official pickle format: each class a colour of its
    own (learnable from two images a class), read by the colour CNN with flips in the shift variants."""
    import pickle

    rng = np.random.default_rng(1)
    palette = rng.integers(0, 256, (10, 3))
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, n in [(f"data_batch_{i}", 20) for i in range(1, 6)] + [("test_batch", 50)]:
        labels = np.arange(n) % 10
        pixels = np.clip(palette[labels][:, :, None] + rng.integers(-30, 31, (n, 3, 1024)), 0, 255)
        batch = {b"batch_label": name.encode(), b"labels": labels.tolist(),
                 b"data": pixels.astype(np.uint8).reshape(n, 3072),
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    out = tmp_path / "study"
    assert main(["augment-study", "--quick", "--dataset", "cifar10", "--data-path", str(tmp_path),
                 "--variants", "real,real+shift+gan", "--out", str(out),
                 "--kernels", "ref", "--no-progress"]) == 0
    report = json.loads((out / "study.json").read_text())
    assert report["classifier"].startswith("colour CNN") and report["train_pool_size"] == 100
    assert report["held_out_size"] == 50
    entry = report["summary"]["2"]
    assert set(entry["variants"]) == {"real", "real+shift+gan"}
    assert entry["variants"]["real"]["mean"] > 0.2  # chance is 0.1 (measured: 0.34 after the 20 quick steps)
    assert (out / "gans" / "k2-seed0" / "checkpoint.pt").is_file() and (out / "study.png").is_file()


def test_random_flip_mirrors_about_half_of_the_images_and_nothing_else():
    from ganforge.engine.metrics.train_classifier import random_flip

    x = torch.randn(400, 3, 5, 7)
    flipped = random_flip(x, torch.Generator().manual_seed(0))
    mirrored = torch.tensor([torch.equal(a, b.flip(-1)) for a, b in zip(flipped, x)])
    kept = torch.tensor([torch.equal(a, b) for a, b in zip(flipped, x)])
    assert bool((mirrored ^ kept).all())  # each image either mirrored left-right or untouched
    assert 150 < int(mirrored.sum()) < 250
    assert torch.equal(flipped, random_flip(x, torch.Generator().manual_seed(0)))  # seeded
