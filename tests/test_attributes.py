"""Conditioning on attribute vectors (--condition-on): the embedding, the critics' explicit gradient with it, the
flags' errors, and a CelebA-format run end to end: training, sampling with --set, export, and editing real faces."""
import json
import shutil

import numpy as np
import pytest
import torch

from ganforge.cli import main
from ganforge.engine.checkpoint import load_checkpoint, load_generator
from ganforge.engine.config import TrainConfig
from ganforge.engine.data import DataError, attribute_names_for, load_dataset
from ganforge.engine.sampling import parse_attribute_settings, requested_attributes
from ganforge.models import AttributeEmbedding, attribute_embedding, build_models, set_attribute_bank
from test_celeba import ATTRIBUTE_NAMES, ATTRIBUTES, write_celeba

NAMES = ("Smiling", "Male", "Eyeglasses")


def test_the_embedding_sums_signed_attribute_rows():
    embed = AttributeEmbedding(NAMES, 5)
    a = torch.tensor([[1.0, -1.0, 1.0], [-1.0, -1.0, -1.0]])
    w = embed.weight.detach()
    assert torch.allclose(embed(a), torch.stack([w[0] - w[1] + w[2], -w.sum(0)]))


@pytest.mark.parametrize("model, shape", [("mlp", (1, 12, 12)), ("dcgan", (3, 32, 32))])
def test_the_explicit_input_gradient_matches_autograd_with_attributes(model, shape):
    torch.manual_seed(0)
    G, D = build_models(model, shape, z_dim=8, width=8, impl="ref", attribute_names=NAMES)
    a = torch.randint(0, 2, (6, 3)).float() * 2 - 1
    assert G(torch.randn(6, 8), a).shape == (6, *shape)
    x = torch.randn(6, *shape, requires_grad=True)
    scores = D(x, a)
    (reference,) = torch.autograd.grad(scores.sum(), x)
    explicit_scores, explicit = D.scores_and_input_grad(x.detach(), a)
    assert torch.allclose(explicit_scores, scores, atol=1e-5)
    assert torch.allclose(explicit, reference, atol=1e-5)
    # D reads the attributes: other values, other scores
    assert not torch.allclose(D(x, -a), scores)


def test_the_bank_holds_training_rows_and_settings_override_them():
    G, _ = build_models("mlp", (1, 8, 8), z_dim=4, width=4, impl="ref", attribute_names=NAMES)
    rows = torch.tensor([[1.0, 1.0, -1.0], [-1.0, 1.0, 1.0]])
    set_attribute_bank(G, rows, seed=3)
    bank = attribute_embedding(G).bank
    assert bank.dtype == torch.int8 and {tuple(r) for r in bank.tolist()} == {(1, 1, -1), (-1, 1, 1)}
    drawn = requested_attributes(G, 50, {"Eyeglasses": -1.0}, seed=1)
    assert drawn.shape == (50, 3) and (drawn[:, 2] == -1).all() and set(drawn[:, 0].tolist()) == {1.0, -1.0}
    assert torch.equal(drawn, requested_attributes(G, 50, {"Eyeglasses": -1.0}, seed=1))  # seeded
    with pytest.raises(ValueError, match="Foo not among the attributes"):
        requested_attributes(G, 1, {"Foo": 1.0})
    unconditional, _ = build_models("mlp", (1, 8, 8), z_dim=4, width=4)
    assert requested_attributes(unconditional, 3) is None
    with pytest.raises(ValueError, match="not conditioned on attributes"):
        requested_attributes(unconditional, 3, {"Smiling": 1.0})


@pytest.mark.parametrize("items, message", [
    (["Smiling"], "expected NAME=VALUE"), (["Smiling=yes"], "expected NAME=VALUE"), (["=1"], "expected NAME=VALUE"),
    (["Smiling=inf"], "finite"), (["Smiling=1", "Smiling=-1"], "sets Smiling twice")])
def test_bad_settings_are_refused(items, message):
    with pytest.raises(ValueError, match=message):
        parse_attribute_settings(items)


def test_settings_parse():
    assert parse_attribute_settings(["Smiling=1", " Male = -1 ", "Eyeglasses=0.5"]) == {
        "Smiling": 1.0, "Male": -1.0, "Eyeglasses": 0.5}


@pytest.fixture(scope="module")
def celeba(tmp_path_factory):
    return write_celeba(tmp_path_factory.mktemp("attributes") / "celeba")


def test_attribute_names_are_checked_against_the_data(celeba):
    data = load_dataset("celeba", celeba, split="train", image_size=8)
    assert attribute_names_for("Male, Smiling", data) == ("Male", "Smiling")
    assert attribute_names_for("all", data) == ATTRIBUTE_NAMES
    for spec, message in (("Smiling,Foo", "Foo not among"), ("Male,Male", "more than once"), (" , ", "names no")):
        with pytest.raises(DataError, match=message):
            attribute_names_for(spec, data)
    with pytest.raises(DataError, match="has none"):
        attribute_names_for("Smiling", load_dataset("mnist5k", split="test"))
    cfg = TrainConfig(conditional=True, condition_on="Smiling")
    with pytest.raises(ValueError, match="choose one"):
        cfg.validate()


@pytest.fixture(scope="module")
def trained(celeba, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    code = main(["train", "--dataset", "celeba", "--data-path", str(celeba), "--image-size", "16", "--model", "mlp",
                 "--width", "8", "--condition-on", ",".join(NAMES), "--iterations", "30", "--batch-size", "8",
                 "--fid-samples", "0", "--kernels", "ref", "--out", str(out), "--no-progress", "--log-every", "10"])
    assert code == 0
    return out


def test_training_keeps_the_names_and_a_bank_of_real_attribute_vectors(trained):
    state = load_checkpoint(trained / "checkpoint.pt")
    assert state["attribute_names"] == list(NAMES) and state["num_classes"] == 0
    G, _, _ = load_generator(trained / "checkpoint.pt")
    assert G.attribute_names == NAMES
    columns = [ATTRIBUTE_NAMES.index(n) for n in NAMES]
    train_rows = {tuple(r) for r in ATTRIBUTES[:16][:, columns].tolist()}  # the fixture's train partition
    assert {tuple(r) for r in attribute_embedding(G).bank.tolist()} <= train_rows


def test_fake_batches_draw_the_attribute_vectors_of_real_rows(celeba):
    from ganforge.engine.session import build_session

    cfg = TrainConfig(dataset="celeba", data_path=str(celeba), image_size=16, model="mlp", width=4, z_dim=4,
                      condition_on="Smiling,Male", batch_size=16, iterations=1, kernels="ref", fid_samples=0)
    state = build_session(cfg).state
    _, fake = state.latent_batch()
    _, real = state.real_batch()
    rows = {tuple(r) for r in state.labels.tolist()}
    assert fake.shape == (16, 2) and {tuple(r) for r in fake.tolist()} <= rows and {tuple(r) for r in real.tolist()} <= rows


def test_sampling_with_settings_changes_the_images_and_is_seeded(trained, tmp_path):
    from ganforge import sample

    ckpt = trained / "checkpoint.pt"
    smiling = sample(ckpt, 6, attributes={"Smiling": 1, "Male": -1}, seed=2)
    assert torch.equal(smiling, sample(ckpt, 6, attributes={"Smiling": 1, "Male": -1}, seed=2))
    assert not torch.allclose(smiling, sample(ckpt, 6, attributes={"Smiling": -1, "Male": 1}, seed=2))
    assert main(["sample", "--ckpt", str(ckpt), "--out", str(tmp_path / "s.png"), "--set", "Smiling=1"]) == 0
    assert main(["augment", "--ckpt", str(ckpt), "--out", str(tmp_path / "a.npz"), "--count", "5",
                 "--set", "Eyeglasses=-1"]) == 0
    with np.load(tmp_path / "a.npz") as data:
        assert data["images"].shape == (5, 16, 16, 3) and data["attributes"].dtype == np.int8
        assert (data["attributes"][:, 2] == -1).all() and tuple(data["attribute_names"]) == NAMES
    assert main(["sample", "--ckpt", str(ckpt), "--out", str(tmp_path / "t.png"), "--set", "Young=1"]) == 2
    assert main(["sample", "--ckpt", str(ckpt), "--out", str(tmp_path / "t.png"), "--label", "1"]) == 2


def test_edit_encodes_real_faces_and_decodes_them_with_new_attributes(trained, tmp_path):
    out = tmp_path / "edit"
    assert main(["edit", "--ckpt", str(trained / "checkpoint.pt"), "--out", str(out), "--set", "Smiling=1",
                 "--set", "Eyeglasses=-1", "--steps", "20", "--no-progress"]) == 0
    report = json.loads((out / "edit.json").read_text())
    assert report["images"] == 4 and report["attributes_of_inputs"] == "the dataset's own"  # the test partition
    rec = report["reconstruction"]
    assert rec["pixel_mse"] < rec["pixel_mse_random_code_same_attributes"]
    (edit,) = report["edits"]
    columns = [ATTRIBUTE_NAMES.index(n) for n in NAMES]
    test_rows = ATTRIBUTES[20:][:, columns]
    changed = int(((test_rows[:, 0] != 1) | (test_rows[:, 2] != -1)).sum())
    assert edit["images_changed"] == changed
    assert (edit["mean_abs_pixel_change"] > 0) == (changed > 0)
    for name, column in (("Smiling", 0), ("Eyeglasses", 2)):
        flips = int((test_rows[:, column] != (1 if name == "Smiling" else -1)).sum())
        assert edit["per_attribute"].get(name, {"images_changed": 0})["images_changed"] == flips
    assert (out / "edit_grid.png").is_file() and report["grid_columns"][-1] == "Smiling=1, Eyeglasses=-1"


def test_an_edit_that_changes_nothing_decodes_the_reconstruction(trained, tmp_path):
    from ganforge.engine.apps.editing.attribute_edits import attribute_edits

    a = torch.tensor([[1.0, -1.0, 1.0]])
    ((_, same),) = attribute_edits(NAMES, a, {"Smiling": 1.0})
    assert torch.equal(same, a)
    flips = attribute_edits(NAMES, a, None)
    assert [t for t, _ in flips] == [f"{n} flipped" for n in NAMES]
    assert torch.equal(flips[1][1], torch.tensor([[1.0, 1.0, 1.0]]))
    out = tmp_path / "edit"
    assert main(["edit", "--ckpt", str(trained / "checkpoint.pt"), "--out", str(out), "--count", "2",
                 "--no-progress", "--steps", "2"]) == 0
    report = json.loads((out / "edit.json").read_text())
    assert [e["edit"] for e in report["edits"]] == [f"{n} flipped" for n in NAMES]
    assert all(e["images_changed"] == 2 and e["mean_abs_pixel_change"] > 0 for e in report["edits"])


def test_an_attribute_encoder_trains_and_is_used(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert main(["train-encoder", "--ckpt", str(run / "checkpoint.pt"), "--iterations", "3", "--batch-size", "4",
                 "--no-progress"]) == 0
    out = tmp_path / "edit"
    assert main(["edit", "--ckpt", str(run / "checkpoint.pt"), "--out", str(out), "--set", "Male=1",
                 "--steps", "0", "--no-progress"]) == 0
    assert json.loads((out / "edit.json").read_text())["encoder_training"]["iterations"] == 3


def test_attribute_flags_fail_clearly(trained, celeba, tmp_path):
    ckpt = str(trained / "checkpoint.pt")
    assert main(["edit", "--ckpt", ckpt, "--out", str(tmp_path / "e"), "--set", "Foo=1"]) == 2
    assert main(["train", "--dataset", "celeba", "--data-path", str(celeba), "--condition-on", "Smiling,Foo",
                 "--iterations", "1", "--batch-size", "8", "--fid-samples", "0", "--out", str(tmp_path / "r")]) == 2
    arrays = tmp_path / "x.npy"
    np.save(arrays, np.zeros((16, 8, 8, 1), dtype=np.uint8))
    assert main(["train", "--dataset", "npy", "--data-path", str(arrays), "--stream", "on", "--condition-on",
                 "Smiling", "--iterations", "1", "--batch-size", "8", "--fid-samples", "0",
                 "--out", str(tmp_path / "s")]) == 2
