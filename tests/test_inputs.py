"""Every input a command reads is checked where it is read: a bad one fails with one line naming the file or flag
and what was expected, never a traceback; and a scoring backbone is never used on data it cannot describe."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ganforge.cli import main
from ganforge.engine.config import TrainConfig
from ganforge.engine.trainer import train

TINY = dict(width=4, z_dim=4, batch_size=8, iterations=2, kernels="ref", fid_samples=0, progress=False)


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err


def one_line_error(code, err):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def conditional_vaegan(tmp_path_factory):
    out = tmp_path_factory.mktemp("vaegan")
    train(TrainConfig(model="vaegan", conditional=True, out=str(out), **TINY))
    return out / "checkpoint.pt"


@pytest.fixture(scope="module")
def conditional_gan(tmp_path_factory):
    out = tmp_path_factory.mktemp("cgan")
    train(TrainConfig(conditional=True, out=str(out), **TINY))
    return out / "checkpoint.pt"


def _npz(**arrays):
    return lambda path: np.savez(path, **arrays)


CODES = np.zeros((3, 4), dtype=np.float32)
LABELS = np.zeros(3, dtype=np.int64)
BAD_CODES = {  # name: (writes the file, what the one line must say)
    "no codes": (_npz(z=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64)), "holds 0 codes"),
    "fewer labels": (_npz(z=CODES, labels=LABELS[:2]), "3 codes need 3 labels"),
    "labels as a column": (_npz(z=CODES, labels=LABELS[:, None]), "got shape (3, 1)"),
    "text codes": (_npz(z=np.array([["a", "b", "c", "d"]]), labels=LABELS[:1]), "'z' holds <U1 values"),
    "fractional labels": (_npz(z=CODES, labels=np.array([0.5, 1.0, 2.0])), "expected integer classes"),
    "NaN codes": (_npz(z=np.full((3, 4), np.nan, np.float32), labels=LABELS), "3 of 3 codes hold NaN"),
    "codes beyond float32": (_npz(z=np.full((3, 4), 1e300), labels=LABELS), "expected finite numbers"),
    "wrong width": (_npz(z=np.zeros((3, 7), np.float32), labels=LABELS), "codes must be (N, 4)"),
    "a class out of range": (_npz(z=CODES, labels=np.array([0, 10, 1])), "class 10 is out of range"),
    "no z": (_npz(codes=CODES), "has no array 'z' (keys: codes)"),
    "an .npy array": (lambda path: np.save(path, CODES), "is a single .npy array, not an .npz"),
    "not a NumPy file": (lambda f: f.write(b"garbage"), "is not a NumPy file"),
}


@pytest.mark.parametrize("case", BAD_CODES)
def test_decode_refuses_each_bad_codes_file_with_one_line_naming_it(conditional_vaegan, tmp_path, capsys, case):
    write, expected = BAD_CODES[case]
    codes = tmp_path / "codes.npz"
    with open(codes, "wb") as f:  # np.save would add .npy to a path; a file object keeps the name
        write(f)
    code, err = run_cli(["decode", "--ckpt", str(conditional_vaegan), "--codes", str(codes), "--kernels", "ref",
                         "--out", str(tmp_path / "decoded.png")], capsys)
    line = one_line_error(code, err)
    assert f"--codes {codes}" in line and expected in line, line
    assert not (tmp_path / "decoded.png").exists()


def _deep_json(path):
    path.write_text('{"lr_g": ' + "[" * 100_000 + "]" * 100_000 + "}")


def _not_utf8(path):
    path.write_bytes(b'{"lr_g": "\xff\xfe"}')


CONFIG_FILES = {  # name: (writes the config file, what the one line must say)
    "arrays 100,000 deep": (_deep_json, "nests arrays or tables too deeply"),
    "invalid UTF-8": (_not_utf8, "is not UTF-8 text (byte 10 is 0xff)"),
}


@pytest.mark.parametrize("case", CONFIG_FILES)
def test_a_bad_config_file_fails_with_one_line_naming_it(tmp_path, capsys, case):
    write, expected = CONFIG_FILES[case]
    config = tmp_path / "config.json"
    write(config)
    line = one_line_error(*run_cli(["train", "--config", str(config), "--out", str(tmp_path / "run")], capsys))
    assert f"--config: {config}" in line and expected in line, line
    assert not (tmp_path / "run").exists()


BAD_TRAIN_FLAGS = {  # name: (flags, what the one line must say)
    "seed beyond the RNG": (["--seed", str(10**23)], "--seed must be an integer in [0, 2**63), got " + str(10**23)),
    "negative seed": (["--seed", "-1"], "--seed must be an integer in [0, 2**63), got -1"),
    "z-dim 1e8": (["--z-dim", "100000000", "--width", "32"], "--z-dim must be at most 4096, got 100000000"),
    "width 1e6": (["--width", "1000000"], "--width must be at most 1024, got 1000000"),
}


@pytest.mark.parametrize("case", BAD_TRAIN_FLAGS)
def test_train_flags_out_of_bounds_fail_with_one_line(tmp_path, capsys, case):
    flags, expected = BAD_TRAIN_FLAGS[case]
    tiny = ["--iterations", "1", "--batch-size", "8", "--width", "4", "--z-dim", "4", "--kernels", "ref",
            "--fid-samples", "0", "--no-progress"]  # the flags under test come after, so they win
    line = one_line_error(*run_cli(["train", *tiny, *flags, "--out", str(tmp_path / "run")], capsys))
    assert expected in line, line
    assert not (tmp_path / "run").exists()


BAD_COMMAND_FLAGS = {  # name: (command and flags after --ckpt, what the one line must say)
    "edit --rows 0": (["edit", "--rows", "0"], "--rows must be >= 1"),
    "edit --strengths ,": (["edit", "--strengths", ","], "--strengths must be one or more finite numbers"),
    "edit --strengths nan": (["edit", "--strengths", "nan,1"], "got nan,1"),
    "sample --seed 1e23": (["sample", "--seed", str(10**23)], "--seed must be an integer in [0, 2**63)"),
    "sample --device cuda": (["sample", "--device", "cuda"], "--device cuda asked for CUDA"),
    "decode --device nonsense": (["decode", "--codes", "c.npz", "--device", "gpu0"], "--device 'gpu0' is not a device"),
    "train-encoder --lr nan": (["train-encoder", "--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    "train-encoder --real-weight -1": (["train-encoder", "--real-weight", "-1"], "--real-weight must be a finite weight"),
    "augment-study --seeds -4": (["augment-study", "--seeds", "0,-4"], "--seeds must be an integer in [0, 2**63)"),
}


@pytest.mark.parametrize("case", BAD_COMMAND_FLAGS)
def test_command_flags_fail_with_one_line_naming_the_flag(conditional_gan, tmp_path, capsys, case):
    (command, *flags), expected = BAD_COMMAND_FLAGS[case]
    if "cuda" in case and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / ("edit" if command == "edit" else "out.png")
    ckpt = [] if command == "augment-study" else ["--ckpt", str(conditional_gan)]  # the study trains its own
    line = one_line_error(*run_cli([command, *ckpt, *flags, "--out", str(out)], capsys))
    assert expected in line, line
    assert not out.exists()


@pytest.mark.slow
def test_torchrun_prints_the_stop_line_once(tmp_path):
    """Both ranks diverge together (the same update on each): one line says so, from rank 0."""
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1")
    env.pop("TRITON_INTERPRET", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ganforge",
               "train", "--iterations", "6", "--batch-size", "8", "--width", "4", "--z-dim", "4", "--kernels", "ref",
               "--fid-samples", "0", "--no-progress", "--log-every", "1", "--lr-g", "1e30", "--lr-d", "1e30",
               "--penalty", "none", "--out", str(tmp_path / "run")]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert output.count("ganforge train: training diverged") == 1, output
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"


@pytest.mark.slow
def test_digit_backbone_on_faces_warns_once_and_notes_it_in_summary_and_score(tmp_path, capsys):
    """The digit classifier scored a CelebA model FID 0.27 with nothing said but fid_backbone: mnist. The README's
    CIFAR-10 and the CelebA commands train with the default backbone, so the run is scored, with one warning line
    before training and fid_backbone_note beside the scores."""
    from test_celeba import write_celeba

    celeba, out = write_celeba(tmp_path / "celeba"), tmp_path / "faces"
    code = main(["train", "--dataset", "celeba", "--data-path", str(celeba), "--image-size", "16", "--width", "4",
                 "--z-dim", "4", "--iterations", "2", "--batch-size", "8", "--kernels", "ref", "--no-progress",
                 "--fid-samples", "4", "--fid-every", "0", "--metrics", "fid", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "--fid-backbone mnist" in warnings[0] and "celeba images" in warnings[0], err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fid_backbone"] == "mnist" and "--fid-backbone inception" in summary["fid_backbone_note"]
    assert main(["score", "--ckpt", str(out / "checkpoint.pt"), "--samples", "4", "--metrics", "fid"]) == 0
    captured = capsys.readouterr()
    assert "ganforge score: warning: the scores use --fid-backbone mnist" in captured.err
    assert "fid_backbone_note" in captured.out
    # what the note asks for: score the same checkpoint with another backbone (here refused: no weights file)
    code, err = run_cli(["score", "--ckpt", str(out / "checkpoint.pt"), "--fid-backbone", "inception",
                         "--inception-weights", str(tmp_path / "none.pth")], capsys)
    assert "none.pth (it does not exist" in one_line_error(code, err)
    # digits, and the Inception backbone, need no note
    from ganforge.engine.metrics.classifier import digit_backbone_note

    assert [digit_backbone_note(backbone, dataset) for backbone, dataset in
            [("mnist", "mnist5k"), ("mnist", "mnist-idx"), ("inception", "celeba")]] == [None, None, None]
    assert all(digit_backbone_note("mnist", d) for d in ("celeba", "cifar10", "npy", "folder"))
