"""Bad input fails before training with one clear message; the command's plumbing works."""
import subprocess
import sys

import numpy as np
import pytest

from ganforge.cli import main


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("args,message", [
    (["--graphs", "on", "--device", "cpu"], "--graphs on needs a CUDA device"),
    (["--device", "cuda:0"], None),
    (["--model", "resnet"], "--model must be one of"),
    (["--loss", "bogus"], "--loss must be one of"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--dataset", "folder", "--data-path", "does/not/exist"], "does/not/exist"),
    (["--dataset", "mnist-idx"], "give a path"),
    (["--model", "dcgan", "--dataset", "ring8"], "image data"),
    (["--ema", "1.5"], "--ema must be in"),
    (["--recipe", "fastest"], "unknown recipe 'fastest'"),
])
def test_bad_train_flags_fail_with_one_clear_line(args, message, capsys, tmp_path):
    code, output = run_cli(["train", "--steps", "1", "--out", str(tmp_path), "--no-progress"] + args, capsys)
    if message is None:  # CUDA asked for: fine where there is a GPU, a clear error where there is none
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
        message = "no CUDA device"
    assert code == 2
    assert "error:" in output and message in output
    assert "Traceback" not in output
    assert not (tmp_path / "checkpoint.pt").exists()


def test_conditional_model_on_unlabelled_data_fails_early(tmp_path, capsys):
    arrays = tmp_path / "digits.npy"
    np.save(arrays, np.random.randint(0, 255, size=(32, 28, 28), dtype=np.uint8))
    code, output = run_cli(["train", "--dataset", "npy", "--data-path", str(arrays), "--conditional",
                            "--out", str(tmp_path / "out"), "--no-progress"], capsys)
    assert code == 2 and "needs labels" in output and str(arrays) in output


def test_nan_pixels_fail_early(tmp_path, capsys):
    arrays = tmp_path / "bad.npy"
    data = np.random.rand(32, 28, 28).astype(np.float32)
    data[3, 4, 5] = np.nan
    np.save(arrays, data)
    code, output = run_cli(["train", "--dataset", "npy", "--data-path", str(arrays), "--out", str(tmp_path / "o"),
                            "--no-progress"], capsys)
    assert code == 2 and str(arrays) in output


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    code, output = run_cli(["sample", "--ckpt", str(tmp_path / "none.pt")], capsys)
    assert code == 2 and "checkpoint not found" in output
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    code, output = run_cli(["fid", "--ckpt", str(tmp_path / "junk.pt")], capsys)
    assert code == 2 and "junk.pt" in output


def test_unknown_command_and_help(capsys):
    assert run_cli(["frobnicate"], capsys)[0] == 2
    assert run_cli(["--help"], capsys)[0] == 0


def test_python_dash_m_ganforge_runs_the_same_command():
    result = subprocess.run([sys.executable, "-m", "ganforge", "train", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "--penalty" in result.stdout and "--graphs" in result.stdout


def test_a_recipe_sets_the_defaults_that_config_and_flags_override(tmp_path):
    """--recipe textbook is the seed's MLP GAN; a --config file and then the flags override it, in that order."""
    from ganforge.commands.training import add_train_args, config_from_args, parse_train_args
    from ganforge.engine.recipes import RECIPES

    def parsed(*argv):
        import argparse

        return config_from_args(parse_train_args(add_train_args(argparse.ArgumentParser()), list(argv)))

    textbook = parsed("--recipe", "textbook")
    for name, value in RECIPES["textbook"].settings.items():
        assert getattr(textbook, name) == value, name
    assert (textbook.penalty, textbook.width, textbook.batch_size, textbook.precision) == ("none", 64, 64, "fp32")
    assert parsed("--recipe", "textbook", "--penalty", "r1").penalty == "r1"
    config = tmp_path / "c.toml"
    config.write_text("batch-size = 32\n")
    both = parsed("--recipe", "textbook", "--config", str(config), "--lr-g", "1e-3")
    assert (both.batch_size, both.lr_g, both.penalty) == (32, 1e-3, "none")
    assert parsed("--recipe", "default") == parsed()
    assert (parsed("--recipe", "mlp-r1").penalty, parsed("--recipe", "mlp-r1").width) == ("r1", 64)
