"""The Python API, the README's snippet, config files and TensorBoard output."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ganforge.cli import main
from ganforge.engine.config import TrainConfig, load_config_file

README = Path(__file__).resolve().parent.parent / "README.md"
TINY = ["--iterations", "4", "--batch-size", "8", "--kernels", "ref", "--no-progress", "--fid-samples", "0",
        "--log-every", "2", "--sample-every", "4", "--ckpt-every", "4"]


def readme_python_snippet():
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Python API section has no python code block"
    return match.group(1)


@pytest.mark.slow
def test_readme_snippet_runs(tmp_path):
    """In a fresh process, as a user runs it (without the test suite's Triton interpreter, which would put the
    CPU run on the interpreted kernels)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", readme_python_snippet()], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]  # the snippet's own asserts check its results
    fid, floor = map(float, result.stdout.split()[-2:])
    assert fid > floor > 0
    assert (tmp_path / "runs/api/checkpoint.pt").is_file() and (tmp_path / "runs/api/config.json").is_file()


def test_import_ganforge_is_lazy_and_complete():
    import ganforge

    for name in ganforge.__all__:
        assert getattr(ganforge, name) is not None
    with pytest.raises(AttributeError):
        ganforge.no_such_name  # noqa: B018


def test_api_train_takes_overrides_and_sample_checks_input(tmp_path):
    from ganforge import sample, train

    out = tmp_path / "run"
    summary = train(TrainConfig(kernels="ref"), iterations=3, batch_size=8, out=str(out), progress=False,
                    fid_samples=0, log_every=1, sample_every=3, ckpt_every=3)
    assert summary["iterations"] == 3 and summary["config"]["batch_size"] == 8
    images = sample(out / "checkpoint.pt", n=5, seed=3)
    assert images.shape == (5, 1, 28, 28) and images.abs().max() <= 1
    with pytest.raises(ValueError, match="n must be >= 1"):
        sample(out / "checkpoint.pt", n=0)
    with pytest.raises(ValueError, match="conditional"):
        sample(out / "checkpoint.pt", n=2, label=3)


def test_config_json_round_trips_a_run(tmp_path):
    first = tmp_path / "first"
    assert main(["train", *TINY, "--seed", "7", "--lr-d", "0.0003", "--out", str(first)]) == 0
    written = json.loads((first / "config.json").read_text())
    assert written["seed"] == 7 and written["lr_d"] == 0.0003 and written["iterations"] == 4
    again = tmp_path / "again"
    assert main(["train", "--config", str(first / "config.json"), "--out", str(again)]) == 0
    repeated = json.loads((again / "config.json").read_text())
    assert {**repeated, "out": None} == {**written, "out": None}
    # the same settings and seed give the same final weights: the run was repeated, not just its file
    import torch

    a = torch.load(first / "checkpoint.pt", weights_only=True)["G"]
    b = torch.load(again / "checkpoint.pt", weights_only=True)["G"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_flags_override_the_config_file_and_toml_is_read(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('model = "mlp"\nlr-g = 0.001\nsteps = 6\nseed = 3\nkernels = "ref"\n')
    values = load_config_file(toml)
    assert values == {"model": "mlp", "lr_g": 0.001, "iterations": 6, "seed": 3, "kernels": "ref"}
    out = tmp_path / "out"
    args = ["train", "--config", str(toml), "--seed", "4", "--out", str(out), "--no-progress", "--fid-samples", "0",
            "--batch-size", "8", "--log-every", "3"]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] == 4 and cfg["lr_g"] == 0.001 and cfg["iterations"] == 6


@pytest.mark.parametrize("content,suffix,message", [
    ('{"modle": "mlp"}', ".json", "unknown settings modle"),
    ('{"batch_size": "64"}', ".json", "batch_size must be int"),
    ('{"conditional": 1}', ".json", "conditional must be bool"),
    ("model = ", ".toml", "cannot parse"),
    ("[1, 2]", ".json", "must hold a table"),
])
def test_bad_config_files_fail_with_one_line(tmp_path, capsys, content, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    code = main(["train", "--config", str(path), "--out", str(tmp_path / "o"), "--no-progress"])
    output = capsys.readouterr().err
    assert code == 2 and message in output and "Traceback" not in output
    assert main(["train", "--config", str(tmp_path / "missing.json")]) == 2


def test_tensorboard_writes_scalars_images_and_fid(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    args = [a for a in TINY if a not in ("--fid-samples", "0")]
    assert main(["train", *args, "--fid-samples", "50", "--tensorboard", "--out", str(out)]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    assert {"train/d_loss", "train/g_loss", "train/images_per_sec", "eval/fid"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("train/d_loss")] == [2, 4]
    summary = json.loads((out / "summary.json").read_text())
    assert events.Scalars("eval/fid")[0].value == pytest.approx(summary["fid"], rel=1e-6)
    assert "samples" in tags["images"] and [e.step for e in events.Images("samples")] == [4, 4]


def test_tensorboard_without_the_extra_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    code = main(["train", *TINY, "--tensorboard", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "needs the tensorboard package" in err and "ganforge[tensorboard]" in err
    assert not (tmp_path / "x" / "checkpoint.pt").exists()
