"""Data-parallel training under torchrun, on the CPU with gloo, started the way a user starts it.

Two ranks must train exactly what one process trains on the concatenated batch (rank 0's rows, then rank 1's),
hold identical weights, leave the writing to rank 0, resume on two ranks or one, and stop with a clear error
when the other rank dies.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ganforge.engine import distributed
from ganforge.engine.checkpoint import load_checkpoint
from ganforge.engine.config import TrainConfig
from ganforge.engine.data import to_unit_range
from ganforge.engine.distributed import BatchDraw, SyncedBatchNorm, World, shard_indices
from ganforge.engine.metrics.evaluate import score_checkpoint
from ganforge.engine.session import build_session, run_iteration

pytestmark = pytest.mark.slow  # every test starts torchrun ranks: processes, not threads

# Adam at 2e-4: the MLP's default 1.6e-3 amplifies the all-reduce's float rounding beyond the tolerances below
RUN_FLAGS = ["--batch-size", "16", "--lr-g", "2e-4", "--lr-d", "2e-4", "--fid-samples", "0", "--log-every", "4",
             "--ckpt-every", "4", "--keep-checkpoints", "5", "--no-progress", "--device", "cpu", "--dist-timeout", "60"]
# The non-saturating loss without a penalty; WGAN-GP through autograd's double backward; the default R1 through the
# explicit input gradient.
OBJECTIVES = {"ns": ["--penalty", "none"],
              "wgan-gp": ["--loss", "wgan", "--penalty", "wgan-gp", "--n-critic", "2", "--penalty-grad", "autograd"],
              "r1": ["--penalty", "r1", "--penalty-every", "2", "--penalty-grad", "explicit"]}


def child_env():
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCH_VARIABLES}
    env.pop("TRITON_INTERPRET", None)  # the reference kernels run on the CPU; the interpreter only slows them
    env["OMP_NUM_THREADS"] = "1"
    return env


def torchrun(args, nproc=2, cwd=None, wait=True):
    """`torchrun --standalone --nproc_per_node N -m ganforge ...`, as a user types it."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "ganforge", *args]
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=child_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return subprocess.run(command, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=300)


def flat_params(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def saved_params(state_dict, module):
    return torch.cat([state_dict[name].reshape(-1) for name, _ in module.named_parameters()])


def one_process_reference(cfg, iterations, world_size=2, concatenated=True):
    """Train ``cfg`` in this process for ``iterations`` on the global batch the ranks make together: each rank's
    rows are drawn from its shard. Returns (G, D, G and D before training)."""
    session = build_session(cfg)
    state = session.state
    before = flat_params(state.G), flat_params(state.D)
    shards = [shard_indices(len(session.dataset), r, world_size, cfg.seed) for r in range(world_size)]
    per_rank, shard_size = cfg.batch_size // world_size, len(shards[0])

    def concatenated_real_batch():
        idx = torch.randint(0, shard_size, (cfg.batch_size,))
        rows = torch.cat([shards[r][idx[r * per_rank:(r + 1) * per_rank]] for r in range(world_size)])
        return to_unit_range(state.pixels.index_select(0, rows)), None

    if concatenated:
        state.real_batch = concatenated_real_batch
    for iteration in range(iterations):
        run_iteration(session, iteration)
    return state.G, state.D, before


def relative_difference(saved, module, before):
    """|saved - trained| / |trained - initial|: how far apart two runs ended, against how far training moved."""
    trained = flat_params(module)
    return float((saved_params(saved, module) - trained).norm() / (trained - before).norm())


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory):
    """One 2-rank run of 8 iterations per objective (--sync-bn, checkpoints at 4 and 8)."""
    runs = {}
    for name, flags in OBJECTIVES.items():
        cwd = tmp_path_factory.mktemp(f"cwd-{name}")
        out = cwd / "run"
        result = torchrun(["train", "--out", str(out), "--iterations", "8", "--sync-bn", *RUN_FLAGS, *flags], cwd=cwd)
        assert result.returncode == 0, result.stdout + result.stderr
        runs[name] = (out, cwd, result)
    return runs


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_two_ranks_train_what_one_process_trains_on_the_concatenated_batch(two_rank_runs, objective):
    out, cwd, result = two_rank_runs[objective]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["batch_per_rank"] == 8 and summary["global_batch"] == 16
    assert summary["penalty_grad"] == {"ns": None, "wgan-gp": "autograd", "r1": "explicit"}[objective]
    assert summary["batch_norm_statistics"] == "synced across ranks"
    assert summary["ranks_max_abs_difference"] == 0.0  # G, D and the EMA are the same on both ranks
    saved = load_checkpoint(out / "checkpoint.pt")
    assert saved["world_size"] == 2 and saved["global_batch"] == 16

    cfg = TrainConfig.from_dict(saved["config"])
    cfg.progress = False
    G, D, (g_before, d_before) = one_process_reference(cfg, 8)
    # fp32 tolerance: the sums run in another order, and Adam's first steps are nearly sign(gradient), so an entry
    # whose gradient is near zero may move either way (measured: at most 1.5e-3 of the distance trained).
    assert relative_difference(saved["G"], G, g_before) < 1e-2
    assert relative_difference(saved["D"], D, d_before) < 1e-2
    # The comparison can fail: one process drawing its batch from all the data ends far off (measured: 0.18-0.36).
    G_other, D_other, (g_before, d_before) = one_process_reference(cfg, 8, concatenated=False)
    assert relative_difference(saved["G"], G_other, g_before) > 0.05
    assert relative_difference(saved["D"], D_other, d_before) > 0.05

    # Rank 0 alone wrote: one record per log interval, nothing outside --out, the run's files only.
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [4, 8]
    assert sorted(p.name for p in cwd.iterdir()) == ["run"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["checkpoint-000004.pt", "checkpoint-000008.pt", "checkpoint.pt", "config.json", "log.jsonl",
         "loss_curve.png", "run.lock", "samples_final.png", "summary.json"])
    assert result.stdout.count('"iterations": 8') == 1  # one report, from rank 0


def test_resume_on_two_ranks_and_on_one(two_rank_runs, tmp_path):
    out, _, _ = two_rank_runs["ns"]
    whole = load_checkpoint(out / "checkpoint-000008.pt")
    flags = [*RUN_FLAGS, *OBJECTIVES["ns"], "--sync-bn", "--iterations", "8"]

    resumed = tmp_path / "resumed"
    result = torchrun(["train", "--out", str(resumed), "--resume", str(out / "checkpoint-000004.pt"), *flags,
                       "--fid-samples", "200"])
    assert result.returncode == 0, result.stdout + result.stderr
    again = load_checkpoint(resumed / "checkpoint.pt")
    for name in ("G", "D"):  # the same ranks continue bit for bit
        assert all(torch.equal(again[name][k], whole[name][k]) for k in whole[name])
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["resumed_at"] == 4 and summary["world_size"] == 2
    # Each rank scored its part of the samples; gathered, the FID is the one a single process computes.
    alone = score_checkpoint(resumed / "checkpoint.pt", n_samples=200)
    assert summary["fid"] == pytest.approx(alone["fid"], rel=1e-6)
    assert summary["fid_real_floor"] == pytest.approx(alone["fid_real_floor"], rel=1e-6)
    assert summary["class_shares"] == alone["class_shares"]

    single = tmp_path / "single"
    result = subprocess.run([sys.executable, "-m", "ganforge", "train", "--out", str(single), "--resume",
                             str(out / "checkpoint-000004.pt"), *flags], env=child_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads((single / "summary.json").read_text())
    assert summary["resumed_at"] == 4 and summary["world_size"] == 1 and summary["iterations"] == 8
    assert summary["batch_norm_statistics"] == "global batch"
    assert [json.loads(line)["iteration"] for line in (single / "log.jsonl").read_text().splitlines()] == [8]


def rank_pid(parent, rank, timeout=60):
    """The pid of the worker with RANK=rank among torchrun's children."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{parent}/task").iterdir():
            for child in (task / "children").read_text().split():
                try:
                    environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if f"RANK={rank}".encode() in environ:
                    return int(child)
        time.sleep(0.2)
    raise AssertionError(f"no worker with RANK={rank} under pid {parent}")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers through /proc (Linux)")
def test_a_killed_rank_stops_the_other_with_a_clear_error(tmp_path):
    out = tmp_path / "run"
    launch = torchrun(["train", "--out", str(out), "--iterations", "1000000", "--log-every", "5",
                       "--ckpt-every", "10", "--batch-size", "16", "--fid-samples", "0", "--no-progress",
                       "--device", "cpu", "--dist-timeout", "20"], wait=False)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint-000010.pt").exists():  # training is under way
            assert launch.poll() is None and time.monotonic() < deadline, launch.stdout.read() if launch.poll() else ""
            time.sleep(0.2)
        os.kill(rank_pid(launch.pid, 1), signal.SIGKILL)
        killed_at = time.monotonic()
        output, _ = launch.communicate(timeout=90)
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGKILL)
    assert launch.returncode != 0
    assert time.monotonic() - killed_at < 60  # a hang, not speed: the ranks stop within seconds, --dist-timeout 20
    assert "another rank died" in output, output[-3000:]
    load_checkpoint(out / "checkpoint.pt")  # the newest checkpoint is whole


def test_a_batch_that_does_not_split_evenly_is_refused(tmp_path):
    result = torchrun(["train", "--out", str(tmp_path / "run"), "--iterations", "2", "--batch-size", "15",
                       "--fid-samples", "0", "--no-progress", "--device", "cpu"])
    assert result.returncode != 0
    assert "must divide evenly among the 2 ranks" in result.stdout + result.stderr
    assert not (tmp_path / "run").exists()


def test_ranks_that_never_all_join_fail_within_the_timeout(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**child_env(), "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "ganforge", "train", "--out", str(tmp_path / "run"),
                             "--iterations", "2", "--fid-samples", "0", "--device", "cpu", "--dist-timeout", "3"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "did not all join within 3 s" in result.stderr
    assert time.monotonic() - start < 60  # a hang, not speed: --dist-timeout 3 must end the wait


def test_a_partial_launch_environment_is_refused():
    assert not distributed.from_environment(environ={}).launched
    with pytest.raises(ValueError, match="MASTER_ADDR, MASTER_PORT missing"):
        distributed.from_environment(environ={"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match="does not fit WORLD_SIZE"):
        distributed.from_environment(environ={"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0",
                                              "MASTER_ADDR": "x", "MASTER_PORT": "1"})


def test_a_rank_without_a_device_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    world = World(rank=3, world_size=4, local_rank=3, launched=True)
    with pytest.raises(ValueError, match="local rank 3.*has no CUDA device: this node has 2"):
        world.device("cuda")
    assert world.device("cpu") == torch.device("cpu")


def test_batch_draws_cut_the_global_draw_and_equal_the_plain_draw_in_one_process():
    torch.manual_seed(5)
    plain = torch.randint(0, 9, (12, 1, 1)), torch.rand(12)
    parts = []
    for rank in range(3):
        torch.manual_seed(5)
        draw = BatchDraw(12, World(rank=rank, world_size=3, launched=True))
        parts.append((draw.randint(0, 9, 1, 1), draw.rand()))
    assert torch.equal(torch.cat([p[0] for p in parts]), plain[0])
    assert torch.equal(torch.cat([p[1] for p in parts]), plain[1])
    torch.manual_seed(5)
    draw = BatchDraw(12)
    assert torch.equal(draw.randint(0, 9, 1, 1), plain[0]) and torch.equal(draw.rand(), plain[1])


def test_shards_are_disjoint_equal_parts():
    shards = [shard_indices(103, r, 4, seed=1) for r in range(4)]
    assert all(len(s) == 25 for s in shards)
    assert len(torch.cat(shards).unique()) == 100
    assert torch.equal(shard_indices(7, 0, 1, seed=1), torch.arange(7))


def test_synced_batch_norm_is_batch_norm_in_one_process_and_loads_its_state():
    torch.manual_seed(0)
    plain = torch.nn.BatchNorm1d(5)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), plain)
    x = torch.randn(8, 3)
    expected = model(x)
    synced_model = torch.nn.Sequential(model[0], plain)
    assert distributed.synchronize_batch_norm(synced_model) == 1
    assert isinstance(synced_model[1], SyncedBatchNorm)
    assert synced_model.state_dict().keys() == model.state_dict().keys()
    torch.testing.assert_close(synced_model(x), expected)


def test_bench_scaling_measures_ranks_against_one_rank_in_one_run(tmp_path):
    out = tmp_path / "scaling.json"
    result = subprocess.run([sys.executable, "-m", "ganforge", "bench", "scaling", "--nproc", "2", "--iterations", "20",
                             "--log-every", "10", "--batch-per-rank", "8", "--out", str(out)],
                            env=child_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(r["launch"], r["nproc"], r["global_batch"]) for r in rows] == [
        ("plain", 1, 8), ("torchrun", 1, 8), ("torchrun", 2, 16)]
    assert rows[1]["scaling_efficiency"] == 1.0 and rows[2]["scaling_efficiency"] > 0
    assert all(r["images_per_sec"] > 0 for r in rows)
    assert "| torchrun | 2 | 16 |" in result.stdout


def test_bench_grad_sync_times_flat_all_reduce_against_ddp(tmp_path):
    out = tmp_path / "grad-sync.json"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "ganforge", "bench", "grad-sync", "--repeats", "1", "--steps", "2", "--out", str(out)],
                            env=child_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    assert data["world_size"] == 2 and set(data["ms_per_step"]) == {"no sync", "flat all-reduce", "ddp"}
    assert all(v > 0 for v in data["ms_per_step"].values())


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_one_rank_under_torchrun_trains_exactly_what_the_plain_command_trains(tmp_path, device):
    """The distributed path (process group, all-reduce in the steps; captured in CUDA graphs on a GPU) changes
    nothing with one rank: bit-identical weights on the CPU. On a GPU, where two plain runs may already differ
    (cuDNN's algorithm search, atomics), the captured run must replay and end close to the plain one."""
    flags = ["--iterations", "12", "--batch-size", "16", "--fid-samples", "0", "--log-every", "6", "--no-progress",
             "--device", device, "--augment", "translation", "--ada-target", "0.6"]
    ranked = torchrun(["train", "--out", str(tmp_path / "torchrun"), *flags], nproc=1)
    assert ranked.returncode == 0, ranked.stdout + ranked.stderr
    plain = subprocess.run([sys.executable, "-m", "ganforge", "train", "--out", str(tmp_path / "plain"), *flags],
                           env=child_env(), capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr
    a, b = (load_checkpoint(tmp_path / run / "checkpoint.pt") for run in ("torchrun", "plain"))
    for name in ("G", "D"):
        if device == "cpu":
            assert all(torch.equal(a[name][k], b[name][k]) for k in a[name])
        else:
            ours, theirs = (torch.cat([t.float().reshape(-1) for t in c[name].values()]) for c in (a, b))
            assert torch.isfinite(ours).all() and float((ours - theirs).norm() / theirs.norm()) < 0.05
    summary = json.loads((tmp_path / "torchrun" / "summary.json").read_text())
    assert summary["world_size"] == 1 and summary["graphs"] == (device == "cuda")
