"""The data a run reads: a resume that reads other data says so, a streamed run whose input fails stops with one line,
and a resident array is held once."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from ganforge.cli import main as cli_main
from ganforge.engine.checkpoint import load_checkpoint
from ganforge.engine.config import TrainConfig
from ganforge.engine.data import arrays
from ganforge.engine.session import build_session
from ganforge.engine.trainer import train


def save_digits(path, seed, n=200):
    np.save(path, np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8))
    return path


def tiny_run(path, out, iterations, **overrides):
    fields = dict(dataset="npy", data_path=str(path), stream="on", width=8, batch_size=16, iterations=iterations,
                  device="cpu", precision="fp32", fid_samples=0, progress=False, log_every=3, ckpt_every=3,
                  out=str(out), data_workers=0, kernels="ref")
    return TrainConfig(**{**fields, **overrides})


@pytest.mark.slow
def test_a_resume_that_reads_other_data_says_so_and_one_that_does_not_reads_the_same_batches(tmp_path):
    first, second = save_digits(tmp_path / "first.npy", 0), save_digits(tmp_path / "second.npy", 1)
    out = tmp_path / "run"
    train(tiny_run(first, out, 3))

    # the same file resident: other batches than streamed (the rows are drawn from another stream)
    changes = train(tiny_run(first, out, 6, stream="off"), resume=out)["changes"]
    assert changes == {"--stream": {"was": "streamed", "now": "resident"}}

    # another file of the same shape, streamed again
    changes = train(tiny_run(second, out, 9), resume=out)["changes"]
    assert set(changes) == {"--data-path", "--stream"}
    assert str(first) in changes["--data-path"]["was"] and str(second) in changes["--data-path"]["now"]

    # the same file, rewritten in place since
    save_digits(second, 2)
    changes = train(tiny_run(second, out, 12), resume=out)["changes"]
    assert set(changes) == {"--data-path"} and str(second) in changes["--data-path"]["now"]

    # the same data, streamed again with another --seed asked: the checkpoint's seed draws the rows, as they were
    train(tiny_run(first, tmp_path / "whole", 6))
    train(tiny_run(first, tmp_path / "split", 3))
    changes = train(tiny_run(first, tmp_path / "split", 6, seed=9), resume=tmp_path / "split")["changes"]
    assert set(changes) == {"--seed"}
    whole, split = load_checkpoint(tmp_path / "whole" / "checkpoint.pt"), load_checkpoint(
        tmp_path / "split" / "checkpoint.pt")
    for net in ("G", "D"):
        for name, value in whole[net].items():
            assert torch.equal(value, split[net][name]), (net, name)


def ganforge_train(*args):
    env = {**{k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "ganforge", "train", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


def wait_for_a_log_record(out, process, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "log.jsonl").is_file() and (out / "log.jsonl").read_text().strip():
            return
        time.sleep(0.05)
    raise AssertionError(f"no log record within {timeout} s: {process.communicate()}")


FAULTS = {
    "a data worker killed": ("a data worker process failed",
                             lambda path, process: [os.kill(pid, signal.SIGKILL) for pid in children(process.pid)]),
    "the file rewritten": ("was (modified|changed from)", lambda path, process: save_digits(path, 7)),
    "the file truncated": ("changed from 156,928 to 100,000 bytes", lambda path, process: os.truncate(path, 100_000)),
}


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the data workers in /proc")
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_streamed_run_whose_input_fails_stops_with_one_line_and_a_failed_summary(tmp_path, fault):
    message, inject = FAULTS[fault]
    path, out = save_digits(tmp_path / "digits.npy", 0), tmp_path / "run"
    process = ganforge_train("--dataset", "npy", "--data-path", str(path), "--stream", "on", "--data-workers", "1",
                             "--width", "8", "--batch-size", "16", "--kernels", "ref", "--fid-samples", "0",
                             "--no-progress", "--iterations", "1000000", "--log-every", "1", "--ckpt-every", "100000",
                             "--out", str(out))
    try:
        wait_for_a_log_record(out, process)
        inject(path, process)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], stderr
    assert re.search(message, lines[0]), lines[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and str(path) in summary["error"]


def test_a_negative_seed_is_refused_before_the_run_folder_is_made(tmp_path, capsys):
    path, out = save_digits(tmp_path / "digits.npy", 0), tmp_path / "run"
    assert cli_main(["train", "--dataset", "npy", "--data-path", str(path), "--stream", "on", "--seed", "-5",
                     "--fid-samples", "0", "--batch-size", "16", "--no-progress", "--out", str(out)]) == 2
    stderr = capsys.readouterr().err
    assert len(stderr.strip().splitlines()) == 1 and "--seed" in stderr, stderr
    assert not out.exists()


@pytest.mark.parametrize("stored", ["NHWC", "NCHW"])
def test_a_resident_array_is_held_once(tmp_path, monkeypatch, stored):
    """The training tensor is the loaded array's memory itself, whichever layout the file stores."""
    images = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "rgb.npy", images if stored == "NHWC" else images.transpose(0, 3, 1, 2).copy())
    loaded, numpy_load = [], np.load

    def load_and_keep(*args, **kwargs):
        loaded.append(numpy_load(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(arrays.np, "load", load_and_keep)
    session = build_session(TrainConfig(dataset="npy", data_path=str(tmp_path / "rgb.npy"), stream="off", width=8,
                                        batch_size=4, device="cpu", kernels="ref", fid_samples=0, progress=False))
    pixels = session.state.pixels
    assert len(loaded) == 1 and pixels.untyped_storage().data_ptr() == loaded[0].ctypes.data
    assert pixels.untyped_storage().nbytes() == images.nbytes
    assert torch.equal(pixels, torch.from_numpy(images).permute(0, 3, 1, 2))
