"""Using a trained G: latent walks and synthetic labelled data that reads back as a dataset."""
import pytest
import torch
from PIL import Image

from ganforge.cli import main
from ganforge.engine.config import TrainConfig
from ganforge.engine.data import load_dataset
from ganforge.engine.sampling import slerp
from ganforge.engine.trainer import train


@pytest.fixture(scope="module")
def conditional_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("cgan")
    train(TrainConfig(iterations=3, batch_size=16, conditional=True, kernels="ref", progress=False, out=str(out),
                      fid_samples=0, log_every=3, sample_every=100, ckpt_every=100))
    return out / "checkpoint.pt"


def test_slerp_ends_on_its_endpoints_and_keeps_the_norm():
    a, b = torch.randn(4, 16, dtype=torch.float64), torch.randn(4, 16, dtype=torch.float64)
    b[0] = a[0]  # a degenerate pair takes the straight-line path
    path = slerp(a, b, torch.linspace(0, 1, 7, dtype=torch.float64))
    assert path.shape == (4, 7, 16)
    torch.testing.assert_close(path[:, 0], a)
    torch.testing.assert_close(path[:, -1], b)
    b_scaled = a.norm(dim=1, keepdim=True) * torch.nn.functional.normalize(b, dim=1)
    mid = slerp(a[1:], b_scaled[1:], torch.tensor([0.5], dtype=torch.float64))[:, 0]
    torch.testing.assert_close(mid.norm(dim=1), a[1:].norm(dim=1))  # equal norms stay equal along the arc


def test_interpolate_writes_a_rows_by_steps_grid(conditional_ckpt, tmp_path, capsys):
    out = tmp_path / "walk.png"
    assert main(["interpolate", "--ckpt", str(conditional_ckpt), "--out", str(out), "--rows", "3",
                 "--steps", "5"]) == 0
    assert Image.open(out).size == (5 * 30 + 2, 3 * 30 + 2)  # 28 px images with 2 px padding


def test_augment_exports_labelled_data_that_loads_as_a_dataset(conditional_ckpt, tmp_path, capsys):
    out = tmp_path / "synthetic.npz"
    assert main(["augment", "--ckpt", str(conditional_ckpt), "--out", str(out), "--count", "40"]) == 0
    data = load_dataset("npy", out)
    assert data.images.shape == (40, 1, 28, 28) and data.labels.tolist() == [i % 10 for i in range(40)]
    assert main(["augment", "--ckpt", str(conditional_ckpt), "--out", str(out), "--count", "5", "--label", "3"]) == 0
    assert load_dataset("npy", out).labels.tolist() == [3] * 5


def test_application_commands_reject_bad_arguments(conditional_ckpt, tmp_path, capsys):
    assert main(["augment", "--ckpt", str(conditional_ckpt), "--out", str(tmp_path / "x.npz"), "--label", "12"]) == 2
    assert main(["interpolate", "--ckpt", str(conditional_ckpt), "--steps", "1"]) == 2
    assert "error" in capsys.readouterr().err
