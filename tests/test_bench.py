"""The bench suite on CPU: one real quick run checked against the schema, compare, report, profile and diff.

No wall-clock figure is asserted: only structure, and the decisions compare and diff make on edited copies.
"""
import copy
import json
import sys
import types

import pytest
import torch

from ganforge.bench import report
from ganforge.commands.bench import bench_command, profile_command
from ganforge.bench.compare import compare_results, kernel_key, parse_threshold
from ganforge.bench.profiling import STEP_RANGES
from ganforge.bench.results import ResultsError, validate_results
from ganforge.bench.timing import quantiles
from ganforge.engine.provenance import command_line
from ganforge.engine.devices import resolve_precision


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `ganforge bench all --quick --device cpu` run, shared by the tests below."""
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    assert bench_command(["all", "--quick", "--device", "cpu", "--out", str(out)]) == 0
    return out


def _load(path):
    return json.loads(path.read_text())


def _write(path, data):
    path.write_text(json.dumps(data))
    return str(path)


def _timed_train_row(data):
    return next(r for r in data["train"] if r["images_per_sec"] is not None)


def _with_kernel_row(data, median_ms, spread):
    """Add one kernel row, so the kernel half of compare is exercised whatever kernel_bench produced."""
    data = copy.deepcopy(data)
    data["kernels"].append({"op": "bias_act", "pass": "forward", "impl": "triton", "numel": 4096, "dtype": "float32",
                            "shape": [64, 64], "median_ms": median_ms, "p20_ms": median_ms * 0.99,
                            "p80_ms": median_ms * 1.01, "spread": spread, "bytes": 32768,
                            "gbps": 32768 / (median_ms * 1e-3) / 1e9, "pct_of_copy": 1.0})
    return data


# -- the results file ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_quick_run_follows_the_schema(quick_run):
    data = validate_results(_load(quick_run))
    assert data["schema"] == "ganforge-bench/1"
    assert data["quick"] is True and data["device_type"] == "cpu"
    assert data["torch"] == torch.__version__
    for key in ("copy_gbps", "matmul_tflops_bf16", "matmul_tflops_fp32"):
        assert data["ceilings"][key] > 0


@pytest.mark.slow
def test_quick_run_train_rows(quick_run):
    rows = _load(quick_run)["train"]
    configs = {(r["name"], r["penalty"]) for r in rows}
    assert {("mlp-28", "none"), ("mlp-28", "wgan-gp"), ("dcgan-28", "none"), ("dcgan-28", "wgan-gp")} <= configs
    by_column = {}
    for r in rows:
        by_column.setdefault(r["column"], []).append(r)
    for r in by_column["eager-fp32"] + by_column["eager-bf16"]:
        assert r["error"] is None, r["error"]
        assert r["images_per_sec"] > 0 and r["ms_per_d_step"] > 0 and r["ms_per_g_step"] > 0
        assert r["flops_per_iter"] > 0 and r["mfu"] > 0
        assert r["peak_mem_mb"] is None  # no device allocator on CPU
    baseline = {(r["name"], r["objective"]): r["images_per_sec"] for r in by_column["eager-fp32"]}
    for r in rows:  # every timed row against the eager-fp32 row of its own configuration
        if r["images_per_sec"] is not None and r["column"] != "eager-fp32":
            assert r["speedup_vs_eager_fp32"] == pytest.approx(r["images_per_sec"] / baseline[(r["name"], r["objective"])])
    # the penalty's double backward costs FLOPs: more per iteration than without it
    flops = {(r["name"], r["penalty"]): r["flops_per_iter"] for r in by_column["eager-fp32"]}
    assert flops[("mlp-28", "wgan-gp")] > flops[("mlp-28", "none")]
    assert all(r["skipped"] for r in by_column["ganforge"])  # CUDA only, and it says so
    # the penalty's input gradient: double backward in the baseline, first-order ops in eager-explicit
    assert {r["penalty_grad"] for r in by_column["eager-fp32"] if r["penalty"] != "none"} == {"autograd"}
    explicit = [r for r in by_column["eager-explicit"] if not r["skipped"]]
    assert explicit and all(r["penalty_grad"] == "explicit" and r["images_per_sec"] > 0 for r in explicit)
    # the trainer's own loop beside the steps of the same settings: what `ganforge train` resolves on this device
    precision = resolve_precision("auto", torch.device("cpu"))
    assert len(by_column["loop"]) == len(by_column["steps"]) == len(configs)
    for r in by_column["steps"]:
        assert r["error"] is None and r["images_per_sec"] > 0, r["error"]
        # the kernels `auto` resolves to on a CPU tensor, except that the interpreter the suite turns on is no speed
        # path: the bench times the reference then
        assert (r["precision"], r["graphs"], r["kernels"]) == (precision, False, "ref")
    for r in by_column["loop"]:
        # a quick run cannot afford blocks holding the user's share of side work: no figure, and the row says why
        assert r["images_per_sec"] is None and r["loop_efficiency"] is None
        assert "2,000-iteration" in r["skipped"]


@pytest.mark.slow
def test_results_record_the_commit_and_the_command(quick_run, monkeypatch):
    data = _load(quick_run)
    assert "git_commit" in data and data["command"] and not data["command"].startswith("/")
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__spec__=None))
    assert command_line(["/opt/venv/bin/ganforge", "bench", "train", "--out", "a b.json"]) == \
        "ganforge bench train --out 'a b.json'"
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(
        __spec__=types.SimpleNamespace(name="ganforge.bench.gpu_check")))
    assert command_line(["/somewhere/gpu_check.py", "--out", "d"]) == "python -m ganforge.bench.gpu_check --out d"


@pytest.mark.slow
def test_validate_rejects_broken_results(quick_run):
    data = _load(quick_run)
    broken = copy.deepcopy(data)
    del broken["ceilings"]
    with pytest.raises(ResultsError, match="ceilings"):
        validate_results(broken)
    broken = copy.deepcopy(data)
    _timed_train_row(broken)["images_per_sec"] = "fast"
    with pytest.raises(ResultsError, match="images_per_sec"):
        validate_results(broken)
    broken = copy.deepcopy(data)
    broken["train"][0].pop("column")
    with pytest.raises(ResultsError, match="column"):
        validate_results(broken)
    broken = _with_kernel_row(data, 1.0, 0.01)
    broken["kernels"][-1]["median_ms"] = None  # null figure without a reason
    with pytest.raises(ResultsError, match="reason"):
        validate_results(broken)


@pytest.mark.slow
def test_report_prints_markdown(quick_run, capsys):
    assert report.main([str(quick_run)]) == 0
    text = capsys.readouterr().out
    assert "Device:" in text and torch.__version__ in text
    assert "| mlp-28" in text and "images/s" in text and "copy bandwidth" in text
    kernel_text = report.kernels_markdown(_with_kernel_row(_load(quick_run), 0.5, 0.01))
    assert "bias_act" in kernel_text and "triton ms" in kernel_text


# -- compare ------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_compare_identical_files_pass(quick_run, capsys):
    assert bench_command(["compare", str(quick_run), str(quick_run)]) == 0
    assert "0 regression(s)" in capsys.readouterr().out


@pytest.mark.slow
def test_compare_flags_an_injected_slowdown(quick_run, tmp_path, capsys):
    # Quick CPU timings are noisy; a fixed small spread makes the decision about the rule, not the machine.
    base = _with_kernel_row(_load(quick_run), 1.0, 0.02)
    for r in base["train"]:
        if r["spread"] is not None:
            r["spread"] = 0.02
    slow_train = copy.deepcopy(base)
    row = _timed_train_row(slow_train)
    row["images_per_sec"] /= 1.3
    assert bench_command(["compare", _write(tmp_path / "base.json", base), _write(tmp_path / "new.json", slow_train),
                       "--threshold", "10%"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and row["name"] in out

    slow_kernel = copy.deepcopy(base)
    slow_kernel["kernels"][-1]["median_ms"] *= 1.3
    assert bench_command(["compare", str(tmp_path / "base.json"), _write(tmp_path / "k.json", slow_kernel)]) == 1
    assert "bias_act forward triton float32 64x64" in capsys.readouterr().out
    # a higher threshold lets the same change through
    assert bench_command(["compare", str(tmp_path / "base.json"), str(tmp_path / "k.json"), "--threshold", "40%"]) == 0


@pytest.mark.slow
def test_compare_ignores_changes_inside_the_noise(quick_run):
    base = _with_kernel_row(_load(quick_run), 1.0, 0.5)  # a 50% run-to-run spread
    new = copy.deepcopy(base)
    new["kernels"][-1]["median_ms"] *= 1.3
    injected = kernel_key(new["kernels"][-1])
    entry = next(e for e in compare_results(base, new, 0.10) if e["key"] == injected)
    assert entry["status"] == "slower-noise"
    assert entry["slowdown"] == pytest.approx(0.3)


@pytest.mark.slow
def test_compare_fails_when_a_row_starts_failing(quick_run, tmp_path):
    base = _load(quick_run)
    new = copy.deepcopy(base)
    row = _timed_train_row(new)
    row["images_per_sec"], row["error"] = None, "RuntimeError: out of memory"
    assert bench_command(["compare", str(quick_run), _write(tmp_path / "new.json", new)]) == 1


def test_compare_rejects_a_file_that_is_not_results(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "something-else"}')
    assert bench_command(["compare", str(bad), str(bad)]) == 2


def test_threshold_parsing_and_timing_quantiles():
    assert parse_threshold("10%") == pytest.approx(0.10)
    assert parse_threshold("0.1") == pytest.approx(0.10)
    assert parse_threshold("25") == pytest.approx(0.25)
    with pytest.raises(ValueError):
        parse_threshold("ten")
    q = quantiles([5.0, 1.0, 4.0, 2.0, 3.0])
    assert q.median == 3.0 and q.p20 <= q.median <= q.p80 and q.count == 5
    assert 1.0 <= q.p20 and q.p80 <= 5.0  # quantiles stay inside the samples


# -- profile ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("profile")
    argv = ["--model", "mlp", "--batch-size", "8", "--synthetic-data", "--kernels", "ref", "--device", "cpu",
            "--loss", "wgan", "--penalty", "wgan-gp", "--ema", "0.99", "--out", str(out),
            "--steps-to-profile", "2", "--warmup", "1"]
    assert profile_command(argv) == 0
    return out


def test_profile_honours_a_config_file_and_the_flags_beside_it(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('model = "mlp"\nloss = "hinge"\npenalty = "none"\nbatch-size = 8\nz-dim = 16\n')
    out = tmp_path / "profile"
    assert profile_command(["--config", str(config), "--z-dim", "24", "--synthetic-data", "--kernels", "ref",
                            "--device", "cpu", "--out", str(out), "--steps-to-profile", "1", "--warmup", "0"]) == 0
    used = json.loads((out / "kernels.json").read_text())["config"]
    assert (used["loss"], used["penalty"], used["batch_size"]) == ("hinge", "none", 8)  # from the file
    assert used["z_dim"] == 24  # the flag beside --config overrides the file


def test_profile_writes_trace_with_named_ranges(profile_dir):
    trace = json.loads((profile_dir / "trace.json").read_text())
    names = {event.get("name") for event in trace["traceEvents"]}
    missing = [r for r in STEP_RANGES if r not in names]
    assert not missing, f"ranges missing from the chrome trace: {missing}"


def test_profile_writes_kernel_table(profile_dir):
    data = json.loads((profile_dir / "kernels.json").read_text())
    assert data["schema"] == "ganforge-profile/1" and data["steps_profiled"] == 2
    assert data["time_basis"] == "self CPU time"
    assert data["kernels"] and all(k["calls"] > 0 and k["self_ms"] > 0 for k in data["kernels"])
    assert sum(k["share"] for k in data["kernels"]) == pytest.approx(1.0)
    assert not {k["name"] for k in data["kernels"]} & set(STEP_RANGES)  # ranges are not kernels
    assert {r["name"] for r in data["ranges"]} >= {"D forward", "G backward", "penalty"}
    assert "ms/iteration" in (profile_dir / "kernels.txt").read_text()


def test_profile_diff_shows_the_slower_kernel(profile_dir, tmp_path, capsys):
    a = profile_dir / "kernels.json"
    data = json.loads(a.read_text())
    victim = data["kernels"][-1]
    victim["ms_per_step"] = victim["ms_per_step"] * 3 + 1.0
    b = tmp_path / "kernels.json"
    b.write_text(json.dumps(data))
    assert profile_command(["diff", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert victim["name"][:40] in out and "slower" in out
    assert profile_command(["diff", str(a), str(b), "--fail-on-slower"]) == 1
    capsys.readouterr()
    assert profile_command(["diff", str(a), str(a), "--fail-on-slower"]) == 0
    assert "0 kernel(s) slower" in capsys.readouterr().out


def test_best_other_leaves_out_ganforge_own_columns():
    from ganforge.bench.train_bench import add_derived

    def row(column, images_per_sec):
        return {"name": "m", "penalty": "wgan-gp", "batch_size": 8, "column": column, "flops_per_iter": None,
                "images_per_sec": images_per_sec, "ms_per_iter": 1.0}

    rows = add_derived([row("eager-fp32", 100.0), row("compile-graphs", 200.0), row("eager-explicit", 150.0),
                        row("graphs-ref", 500.0), row("ganforge", 600.0), row("compile-explicit", 700.0),
                        row("steps", 640.0), row("loop", 608.0)], None)
    best_other = {r["column"]: r["speedup_vs_best_other"] for r in rows}
    assert best_other["ganforge"] == pytest.approx(3.0) and best_other["graphs-ref"] == pytest.approx(2.5)
    assert best_other["compile-graphs"] == pytest.approx(2.0) and best_other["eager-fp32"] == pytest.approx(0.5)
    assert best_other["compile-explicit"] == pytest.approx(3.5)  # ours too: not "other"
    efficiency = {r["column"]: r.get("loop_efficiency") for r in rows}
    assert efficiency["loop"] == pytest.approx(0.95)  # the loop against the steps of the same settings
    assert all(efficiency[c] is None for c in efficiency if c != "loop")


def test_mfu_is_quoted_against_the_rate_of_the_rows_precision():
    """An fp32 row against the fp32 matmul rate, a bf16 row against bf16's: on a CPU that emulates bf16 an fp32 row
    quoted against the bf16 rate read 2,900% MFU."""
    from ganforge.bench.train_bench import add_derived

    def row(column, precision):
        return {"name": "m", "objective": "default", "penalty": "r1", "batch_size": 8, "column": column,
                "precision": precision,
                "flops_per_iter": 2e9, "images_per_sec": 100.0, "ms_per_iter": 1000.0}

    rows = add_derived([row("eager-fp32", "fp32"), row("eager-bf16", "bf16"), row("steps", "auto?")], 0.001, 0.2)
    mfu = {r["column"]: r["mfu"] for r in rows}
    assert mfu["eager-fp32"] == pytest.approx(0.002 / 0.2) and mfu["eager-bf16"] == pytest.approx(0.002 / 0.001)
    assert mfu["steps"] is None  # no measured rate for that precision: no figure


# -- the compiled columns and the loop column -------------------------------------------------------------------

def test_compile_events_count_a_new_graph():
    from ganforge.bench.train_bench import compile_events

    torch._dynamo.reset()
    before = compile_events()
    fn = torch.compile(lambda x: (x * 2).sin(), backend="eager")
    x = torch.randn(int(torch.randint(3, 9, ()).item()))
    fn(x)
    compiled = compile_events()
    assert compiled > before
    fn(torch.randn_like(x))  # the same shape: a cache hit, nothing compiles
    assert compile_events() == compiled
    torch._dynamo.reset()


def _plan(columns, **timing):
    from ganforge.bench.train_bench import Plan

    return Plan(("mlp-28",), ("default",), (16,), columns, **{"warmup": 1, "iters": 2, "repeats": 2, **timing})


@pytest.mark.slow  # Dynamo traces the whole D and G steps: 10-20 s on a shared 2-core CPU
def test_compiled_column_times_no_compilation(monkeypatch):
    """`ganforge train --compile`'s steps (Dynamo's eager backend here: Inductor's C++ build takes minutes on a
    small CPU). The default recipe's lazy R1 compiles a second D step variant after the first warm-up iteration:
    the warm-up runs on until a whole penalty cycle compiles nothing, and no timed block compiles."""
    from ganforge.bench import train_bench
    from ganforge.engine.steps import Steps

    compile_steps = Steps.compile_steps
    monkeypatch.setattr(Steps, "compile_steps", lambda self, backend="eager": compile_steps(self, backend="eager"))
    plan = _plan(("compile-explicit",))
    dataset = train_bench.bench_dataset((1, 28, 28), 16)
    (row,) = train_bench.run_columns("mlp-28", "default", plan.columns, 16, "cpu", plan, dataset)
    assert row["error"] is None and row["images_per_sec"] > 0, row["error"]
    assert row["timed_compiles"] == 0
    assert row["warmup"] >= 1 + 4  # the first iteration, then at least one penalty cycle (R1 every 4th D step)
    assert row["compile_s"] is not None and row["compile_s"] >= 0
    # the precision `ganforge train --compile` resolves here, not bf16 forced on a CPU that emulates it
    assert row["precision"] == resolve_precision("auto", torch.device("cpu"))
    assert "compiled in" in train_bench._progress_line(row)


def test_a_compilation_inside_a_timed_block_voids_the_figure():
    from ganforge.bench import train_bench

    row = train_bench._new_row("mlp-28", "r1", "compile-explicit", 16, _plan(("compile-explicit",)))
    timed = types.SimpleNamespace(warmup=3, warmup_s=9.0, block=2, block_ms=[5.0, 6.0], d_ms=[1.0], g_ms=[1.0],
                                  compiles_timed=int(torch.randint(1, 5, ()).item()), skipped=None)
    train_bench._fill_timing(row, timed)
    assert row["images_per_sec"] is None and row["compile_s"] is None
    assert f"compiled {timed.compiles_timed} graph(s) inside the timed blocks" in row["error"]
    timed.compiles_timed = 0
    row = train_bench._new_row("mlp-28", "r1", "compile-explicit", 16, _plan(("compile-explicit",)))
    train_bench._fill_timing(row, timed)
    assert row["ms_per_iter"] == pytest.approx(2.75)  # median 5.5 ms per 2-iteration block
    assert row["compile_s"] == pytest.approx(9.0 - 3 * 2.75e-3)  # the warm-up beyond 3 steady iterations


def test_default_cpu_columns_include_the_users_run():
    from ganforge.bench.train_bench import default_plan

    assert {"steps", "loop"} <= set(default_plan("cpu", quick=False).columns)


def test_loop_blocks_hold_the_users_share_of_side_work(monkeypatch):
    from ganforge.bench import train_bench

    assert train_bench.loop_block(_plan(("loop",), iters=3)) == 2000
    assert train_bench.loop_block(_plan(("loop",), iters=2500)) == 4000
    assert train_bench.make_config("mlp-28", "default", "loop", 16, "cpu").ckpt_every == 2000
    assert train_bench.skip_reason("loop", "cpu", quick=True, objective="default")
    # blocks that do not fit the budget are left out with a note, never shortened
    monkeypatch.setattr(train_bench, "LOOP_BUDGET_S", 0)
    plan = _plan(("steps", "loop"))
    rows = train_bench.run_columns("mlp-28", "none", plan.columns, 16, "cpu", plan,
                                   train_bench.bench_dataset((1, 28, 28), 16))
    steps, loop = rows
    assert steps["images_per_sec"] > 0 and loop["images_per_sec"] is None
    assert "2,000 iterations" in loop["skipped"] and loop["iters"] == 2000
    validate_results({"schema": "ganforge-bench/1", "device": "cpu", "device_type": "cpu", "torch": "x",
                      "triton": None, "git_commit": None, "date": "d", "quick": False, "kernels": [],
                      "ceilings": {"copy_gbps": 1.0, "matmul_tflops_bf16": 1.0, "matmul_tflops_fp32": 1.0},
                      "train": rows})
