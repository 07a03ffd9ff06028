"""The prepared GPU check runs clean on a machine without CUDA: environment written, GPU phases skipped."""
import json

import pytest
import torch

from ganforge.bench import gpu_check
from ganforge.bench.harness import main as bench_main

pytestmark = pytest.mark.slow  # each test runs phases of the GPU check end to end on the CPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the check runs for real")
def test_gpu_check_skips_gpu_phases_without_cuda(tmp_path, capsys):
    assert bench_main(["gpu-check", "--out", str(tmp_path)]) == 0
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["cuda_available"] is False and env["torch"] == torch.__version__
    assert "GPU tests and GPU benchmarks skipped" in capsys.readouterr().out
    assert not (tmp_path / "gpu_check.json").exists()


def test_benchmark_phases_run_on_cpu_in_plan_order(tmp_path):
    """The phases themselves, on CPU with tiny cases: headline rows, then the hook (the GPU tests' slot), then the
    sweep; GPU-only columns are recorded as skipped, and the file is written."""
    order = []

    def log(line):
        order.append(line)

    results = gpu_check.run_benchmarks(
        tmp_path, deadline=float("inf"), log=log, device="cpu", cases=(("mlp-28", "wgan-gp", 4),),
        columns=("eager-fp32", "eager-explicit", "ganforge"), sweep_cases=(("mlp-28", "wgan-gp"),),
        sweep_batches=(4, 8), sweep_columns=("eager-explicit",), kernel_numel=None,
        timing=dict(warmup=1, iters=1, repeats=1), between=lambda: order.append("between"),
        loop_cases=(("mlp-28", "default", 4),), loop_timing=dict(warmup=1, iters=4, repeats=1))
    columns = [(r["column"], r["batch_size"]) for r in results["train"]]
    assert columns == [("eager-fp32", 4), ("eager-explicit", 4), ("ganforge", 4), ("steps", 4), ("loop", 4),
                       ("eager-explicit", 8)]
    assert order.index("between") == 6  # the ceilings line, three headline rows and the loop rows come first
    rows = {r["column"]: r for r in results["train"][:5]}
    assert rows["ganforge"]["skipped"] and rows["eager-explicit"]["penalty_grad"] == "explicit"
    assert rows["loop"]["loop_efficiency"] > 0 and rows["loop"]["objective"] == "default"
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert len(saved["train"]) == 6 and (tmp_path / "gpu_check.md").is_file()


def test_quality_and_torchrun_phases_run_on_cpu(tmp_path, monkeypatch):
    """The two phases after the GPU tests, shrunk to seconds on the CPU: the quality row's curve file and the
    torchrun launch beside the plain command."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the phases start `ganforge train` processes
    lines = []
    gpu_check.quality_row(tmp_path, lines.append, device="cpu", marks_s=(1,), fid_samples=50)
    curve = json.loads((tmp_path / "quality.json").read_text())["curves"][0]
    assert curve["name"] == "default" and curve["points"][0]["mark_s"] == 1 and curve["points"][0]["iterations"] > 0
    gpu_check.torchrun_check(tmp_path, device="cpu", iterations=12)
    rows = json.loads((tmp_path / "torchrun.json").read_text())["rows"]
    assert [(r["launch"], r["nproc"]) for r in rows] == [("plain", 1), ("torchrun", 1)]


def test_counts_phase_writes_the_counts_of_its_device(tmp_path):
    """The counts phase on the CPU: the same counts as the committed baseline's steps, and no graph launches (a CPU
    has no CUDA graphs); on a GPU the same file carries the launches per replay."""
    from ganforge.bench import counts

    lines = []
    gpu_check.counts_check(tmp_path, lines.append, device="cpu")
    written = json.loads((tmp_path / "counts-cpu.json").read_text())
    assert written["schema"] == counts.SCHEMA and written["graph_launches"] == {}
    assert set(written["steps"]) == set(counts.count_steps("cpu")) and "| mlp/default/g |" in lines[0]


def test_penalty_cost_measures_three_columns_on_cpu(tmp_path, capsys):
    """R3GAN's D step three ways, shrunk to a few iterations: each column ran its own penalty path, and the ratio
    of the unpenalised column to itself is 1."""
    from ganforge.bench import penalty_cost
    from ganforge.cli import main as cli_main

    results = penalty_cost.measure("mlp-28", 8, "cpu", iters=2, repeats=2, warmup=1)
    rows = {row["column"]: row for row in results["rows"]}
    assert rows["no penalty"]["penalty_grad"] is None and rows["no penalty"]["d_step_vs_no_penalty"] == 1.0
    assert rows["double backward"]["penalty_grad"] == "autograd" and rows["explicit"]["penalty_grad"] == "explicit"
    assert all(row["ms_per_d_step"] > 0 and row["d_step_samples"] == 2 for row in rows.values())
    assert results["git_commit"] and results["command"]
    out = tmp_path / "cost.json"
    assert cli_main(["bench", "penalty-cost", "--model", "mlp-28", "--batch-size", "8", "--iters", "1",
                     "--repeats", "1", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["schema"] == "ganforge-penalty-cost/1"
    assert "| explicit | explicit |" in capsys.readouterr().out
