"""Streaming a uint8 .npy from disk (--stream): the batches are the file's rows, training is exact across workers,
resumes and ranks, and every case it cannot stream says why."""
import json

import numpy as np
import pytest
import torch

from ganforge.engine.checkpoint import load_checkpoint
from ganforge.engine.config import TrainConfig
from ganforge.engine.data import DataError, to_unit_range
from ganforge.engine.data.stream import BatchStream, open_streamed_npy, stream_batch_rows
from ganforge.engine.distributed import shard_indices
from ganforge.engine.session import build_session, run_iteration
from ganforge.engine.trainer import train

from test_distributed import RUN_FLAGS, flat_params, relative_difference, torchrun


def digits_file(tmp_path, n=200, layout="nhw", seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    stored = {"nhw": images, "nhwc": images[..., None], "nchw": images[:, None]}[layout]
    path = tmp_path / f"{layout}.npy"
    np.save(path, stored)
    return path, images


def stream_config(path, out, **overrides):
    fields = dict(dataset="npy", data_path=str(path), stream="on", width=8, batch_size=16, iterations=6,
                  device="cpu", precision="fp32", fid_samples=0, progress=False, log_every=3, ckpt_every=3,
                  out=str(out), data_workers=0, kernels="ref")
    return TrainConfig(**{**fields, **overrides})


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw"])
def test_each_batch_holds_the_rows_its_numbers_draw(tmp_path, layout):
    path, images = digits_file(tmp_path, layout=layout)
    data = open_streamed_npy(path)
    assert len(data) == 200 and data.data_shape == (1, 28, 28)
    shard = np.arange(200)
    stream = BatchStream(data, seed=3, shard=shard, global_batch=16, rank_rows=slice(0, 16), device="cpu",
                         workers=1)
    buffer = torch.empty((16, 1, 28, 28), dtype=torch.uint8)
    for number in (0, 1, 2, 7, 3):  # 7 and 3: the workers restart at the asked batch (a resume, a rollback)
        stream.fill(buffer, number)
        rows = stream_batch_rows(3, number, shard, 16, slice(0, 16))
        assert torch.equal(buffer, torch.from_numpy(images[rows][:, None]))
    stream.close()
    # the numbers are a pure function of (seed, batch), and ranks cut one global draw
    a, b = stream_batch_rows(3, 5, shard, 16, slice(0, 8)), stream_batch_rows(3, 5, shard, 16, slice(8, 16))
    assert np.array_equal(np.concatenate([a, b]), stream_batch_rows(3, 5, shard, 16, slice(0, 16)))
    assert not np.array_equal(stream_batch_rows(3, 5, shard, 16, slice(0, 16)),
                              stream_batch_rows(4, 5, shard, 16, slice(0, 16)))


def test_streamed_training_is_the_same_with_any_number_of_workers_and_resumes_exactly(tmp_path):
    path, _ = digits_file(tmp_path)
    runs = {}
    for workers in (0, 2):
        cfg = stream_config(path, tmp_path / f"w{workers}", data_workers=workers)
        summary = train(cfg)
        assert summary["data"] == "streamed" and summary["input_wait_seconds"] >= 0
        runs[workers] = load_checkpoint(tmp_path / f"w{workers}" / "checkpoint.pt")
    for net in ("G", "D"):
        for key, value in runs[0][net].items():
            assert torch.equal(value, runs[2][net][key]), (net, key)
    records = [json.loads(line) for line in (tmp_path / "w2" / "log.jsonl").read_text().splitlines()]
    assert all("input_wait_share" in r for r in records if "d_loss" in r)

    # interrupted at iteration 3 and resumed: bit-identical to the uninterrupted run
    first = stream_config(path, tmp_path / "part", iterations=3)
    train(first)
    train(stream_config(path, tmp_path / "part", iterations=6), resume=tmp_path / "part")
    resumed = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    for net in ("G", "D"):
        for key, value in runs[0][net].items():
            assert torch.equal(value, resumed[net][key]), (net, key)


def test_auto_streams_only_what_exceeds_the_memory_budget(tmp_path):
    path, images = digits_file(tmp_path)
    resident = train(stream_config(path, tmp_path / "resident", stream="auto", iterations=2))
    assert resident["data"] == "resident"  # 157 KB fits the default budget
    tiny_budget = stream_config(path, tmp_path / "streamed", stream="auto", iterations=2, data_memory=1e-4)
    assert train(tiny_budget)["data"] == "streamed"  # 1e-4 GiB = 107 KB < 157 KB
    # a float array cannot be streamed as stored: auto loads it, on says why
    floats = tmp_path / "floats.npy"
    np.save(floats, images[:64].astype(np.float32) / 255)
    assert train(stream_config(floats, tmp_path / "f", stream="auto", data_memory=1e-6, iterations=1))["data"] == \
        "resident"
    with pytest.raises(DataError, match="streaming reads uint8 pixels"):
        build_session(stream_config(floats, tmp_path / "f2"))


def test_what_cannot_be_streamed_is_refused_with_the_reason(tmp_path):
    path, images = digits_file(tmp_path)
    cases = [
        (dict(conditional=True), ValueError, "has no labels"),
        (dict(fid_samples=100), ValueError, "--fid-samples 0"),
        (dict(image_size=32), DataError, "--image-size 32 would resize"),
        (dict(channels=3), DataError, "1 channel"),
        (dict(dataset="mnist5k", data_path=None), ValueError, "--stream on reads a uint8 .npy"),
    ]
    for overrides, error, match in cases:
        with pytest.raises(error, match=match):
            build_session(stream_config(path, tmp_path / "x", **overrides))
    np.savez(tmp_path / "set.npz", images=images)
    with pytest.raises(ValueError, match="--stream on reads a uint8 .npy"):
        build_session(stream_config(tmp_path / "set.npz", tmp_path / "x"))
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        build_session(stream_config(truncated, tmp_path / "x"))
    with pytest.raises(ValueError, match="--stream must be one of"):
        stream_config(path, tmp_path / "x", stream="yes").validate()


@pytest.mark.slow
def test_two_ranks_stream_what_one_process_trains_on_their_concatenated_batches(tmp_path):
    path, images = digits_file(tmp_path, n=400)
    out = tmp_path / "run"
    flags = ["--dataset", "npy", "--data-path", str(path), "--stream", "on", "--penalty", "none", "--sync-bn",
             "--data-workers", "1"]
    result = torchrun(["train", "--out", str(out), "--iterations", "6", *RUN_FLAGS, *flags], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"] == "streamed" and summary["world_size"] == 2
    assert summary["ranks_max_abs_difference"] == 0.0
    saved = load_checkpoint(out / "checkpoint.pt")

    # one process, the file resident, each batch the two ranks' streamed rows concatenated
    cfg = TrainConfig.from_dict(saved["config"])
    cfg.stream, cfg.progress = "off", False
    session = build_session(cfg)
    state = session.state
    before = flat_params(state.G), flat_params(state.D)
    shards = [shard_indices(400, r, 2, cfg.seed).numpy() for r in range(2)]
    batch_number = iter(range(6))

    def concatenated_stream_batch():
        k = next(batch_number)
        rows = np.concatenate([stream_batch_rows(cfg.seed, k, shards[r], 16, slice(8 * r, 8 * r + 8))
                               for r in range(2)])
        return to_unit_range(state.pixels[torch.from_numpy(rows)]), None

    state.real_batch = concatenated_stream_batch
    for iteration in range(6):
        run_iteration(session, iteration)
    assert relative_difference(saved["G"], state.G, before[0]) < 1e-2
    assert relative_difference(saved["D"], state.D, before[1]) < 1e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_captured_steps_replay_over_streamed_batches(tmp_path):
    """On CUDA the streamed batch is copied from pinned memory into the captured graphs' static input: the graphed
    run stays with the eager one (rpgan: the G step reads a streamed batch too)."""
    from test_graphs import relative_drift

    path, _ = digits_file(tmp_path, n=400)
    sessions = []
    for graphs in ("off", "on"):
        cfg = stream_config(path, tmp_path / graphs, device="cuda", graphs=graphs, kernels="auto", loss="rpgan",
                            precision="bf16", data_workers=1, batch_size=64).validate()
        session = build_session(cfg)
        initial = {k: v.detach().clone() for k, v in session.state.G.state_dict().items()}
        for i in range(8):  # 3 warm-up calls, the capture, then replays
            run_iteration(session, i)
        torch.cuda.synchronize()
        sessions.append(session)
    eager, graphed = sessions
    assert graphed.graphs and len(graphed.runner.graphs) >= 2 and graphed.state.pixels.is_cuda
    assert relative_drift(eager.state.G, graphed.state.G, initial) < 0.05
    for session in sessions:
        session.stream.close()
