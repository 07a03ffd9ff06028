"""The prepared GPU check: environment, the headline benchmarks, the GPU tests, a batch sweep and the kernel rows.

    ganforge bench gpu-check --out DIR [--budget-s 420] [--tests-timeout-s 150]

One call of at most 8 minutes; the time plan puts the headline rows first, so a run cut short keeps them.
Phases, each written to DIR as soon as it ends:
  env.json             GPU, driver, torch, triton, torchmetrics
  gpu_check.json       bench results (schema ganforge-bench/1): ceilings; the headline rows (MLP GAN batch 128,
                       DCGAN-64 WGAN-GP batch 256) with every column; the loop rows (`ganforge train`'s own loop
                       beside its steps: loop efficiency); then a batch sweep 64-512 of both in
                       eager-fp32 / eager-explicit / ganforge; then the kernel rows at 64M elements
  pytest_gpu.txt       `pytest -m gpu tests/` (graphed vs eager steps and FID, fp16 inf skip, kernels on the device)
  quality.json         time to quality: the default recipe with CUDA graphs, FID at 15, 30 and 60 s of training
  torchrun.json        a one-process torchrun launch with graphs on beside the plain command (bench.scaling)
  penalty-cost.json    RpGAN + R1 + R2's D step on DCGAN-64 batch 64: explicit input gradient vs double backward
                       vs no penalty, timed interleaved (bench.penalty_cost)
  counts-cuda.json     operators, allocations and host reads per step on the device, and the kernels one CUDA
                       graph replay of each captured step launches (bench.counts)
  gpu_check.md         the results as readable tables
Without CUDA every GPU phase is skipped with a line saying so, and the exit code is 0.
"""
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

# The headline end-to-end comparisons: (bench model, objective, batch size), every column.
TRAIN_CASES = (("dcgan-64", "wgan-gp", 256), ("mlp-28", "none", 128))
# compile columns last within a case: they cost the most time, and a run cut short loses them first.
TRAIN_COLUMNS = ("eager-fp32", "ganforge", "graphs-ref", "eager-explicit", "eager-bf16", "compile-explicit",
                 "compile-graphs", "compile")
# The user's command beside its own steps: `ganforge train`'s loop (steps + loop columns) on the headline MLP case and
# the default recipe, in blocks of 2,000 iterations, so the loop's side work is exactly the default run's (a log
# record every 100 iterations, a sample grid every 1,000, a checkpoint every 2,000).
LOOP_CASES = (("mlp-28", "none", 128), ("mlp-28", "default", 64), ("dcgan-28", "default", 64))
LOOP_COLUMNS = ("steps", "loop")
LOOP_TIMING = dict(warmup=10, iters=2000, repeats=3)
# The batch sweep, after the headline rows: fewer columns, the other batch sizes.
SWEEP_CASES = (("dcgan-64", "wgan-gp"), ("mlp-28", "none"))
SWEEP_BATCHES = (64, 128, 256, 512)
SWEEP_COLUMNS = ("eager-fp32", "eager-explicit", "ganforge")
TIMING = dict(warmup=5, iters=20, repeats=3)
KERNEL_NUMEL = 1 << 26  # 64M elements


def environment():
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for module in ("triton", "torchmetrics"):
        try:
            env[module] = __import__(module).__version__
        except ImportError:
            env[module] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 1e9, 1),
                   multiprocessors=props.multi_processor_count, cuda=torch.version.cuda)
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            env["driver"] = None
    return env


def run_gpu_tests(out, timeout_s):
    """`pytest -m gpu` in a child process, so a hang or crash there cannot take the benchmarks down."""
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-v", "-p", "no:cacheprovider", "tests",
           f"--junitxml={out / 'pytest_gpu.xml'}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        text, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        text = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        text, code = text + f"\n[gpu tests stopped after {timeout_s:.0f} s]", "timeout"
    (out / "pytest_gpu.txt").write_text(text)
    summary = text.strip().splitlines()[-1] if text.strip() else ""
    return code, summary


def run_benchmarks(out, deadline, log, device="cuda", cases=TRAIN_CASES, columns=TRAIN_COLUMNS,
                   sweep_cases=SWEEP_CASES, sweep_batches=SWEEP_BATCHES, sweep_columns=SWEEP_COLUMNS,
                   kernel_numel=KERNEL_NUMEL, timing=TIMING, between=None, loop_cases=LOOP_CASES,
                   loop_timing=LOOP_TIMING):
    """Ceilings, headline rows, then (``between``, e.g. the GPU tests), the sweep and the kernel rows; each phase
    starts only while ``deadline`` (time.monotonic) is ahead, and the file is saved after each."""
    from .kernel_bench import kernel_rows
    from .report import report_markdown
    from .results import new_results, save_results
    from .suite import measure_ceilings
    from .train_bench import Plan, train_rows

    device = torch.device(device)
    results = new_results(device, quick=False)
    results["notes"].append("bench.gpu_check: headline cases, a batch sweep and 64M-element kernel rows; "
                            "`ganforge bench all` runs the full sweep")
    path = out / "gpu_check.json"

    def save():
        save_results(results, path)
        (out / "gpu_check.md").write_text(report_markdown(results))

    def train_phase(label, name, objective, batch, cols, timing=timing):
        if time.monotonic() > deadline - 30:
            results["notes"].append(f"{label} {name} {objective} batch {batch} not run: time budget spent")
            return
        plan = Plan((name,), (objective,), (batch,), tuple(cols), **timing)
        results["train"] += train_rows(device, matmul_tflops_bf16=c["matmul_tflops_bf16"], plan=plan, log=log,
                                       matmul_tflops_fp32=c["matmul_tflops_fp32"])
        save()

    results["ceilings"] = measure_ceilings(device)
    c = results["ceilings"]
    log(f"ceilings: copy {c['copy_gbps']:,.0f} GB/s, bf16 matmul {c['matmul_tflops_bf16']:.0f} TFLOP/s")
    results["train"] = []
    save()
    for name, objective, batch in cases:
        train_phase("headline", name, objective, batch, columns)
    for name, objective, batch in loop_cases:
        train_phase("loop", name, objective, batch, LOOP_COLUMNS, loop_timing)
    if between is not None:
        between()
    for name, objective in sweep_cases:
        headline_batches = {b for n, o, b in cases if (n, o) == (name, objective)}
        for batch in sweep_batches:
            if batch not in headline_batches:
                train_phase("sweep", name, objective, batch, sweep_columns)
    if kernel_numel is None:
        results["notes"].append("kernel rows not asked for")
    elif time.monotonic() < deadline - 25:
        results["kernels"] = kernel_rows(device, sizes=[kernel_numel], copy_gbps=c["copy_gbps"])
    else:
        results["notes"].append("kernel rows not run: time budget spent")
    save()
    return results


def counts_check(out, log, device="cuda"):
    """What each step dispatches on the device, and the kernels a replay of each captured step launches."""
    from ..engine.io import atomic_write_json
    from .counts import markdown_table, measure

    results = measure(device)
    atomic_write_json(out / f"counts-{torch.device(device).type}.json", results, indent=1)
    log(markdown_table(results))


def run_phase(log, name, fn, *args):
    """A phase that must not take the rest of the check down with it: its failure is logged, not raised."""
    try:
        fn(*args)
    except Exception as exc:  # the check goes on; the log says what failed
        log(f"{name} failed: {type(exc).__name__}: {exc}")


def quality_row(out, log, device="cuda", marks_s=(15, 30, 60), fid_samples=2000):
    """The default recipe as it ships, with CUDA graphs: FID at 15, 30 and 60 s of training (target: <= 10 by
    30 s)."""
    from ..engine.io import atomic_write_text
    from .quality import SHIPPED, markdown_table, measure_curves

    results = measure_curves([SHIPPED], marks_s=marks_s, fid_samples=fid_samples, device=device, progress=False,
                             log=log)
    atomic_write_text(out / "quality.json", json.dumps(results, indent=1) + "\n")
    log(markdown_table(results))


def torchrun_check(out, device="cuda", iterations=1200):
    """One-process torchrun launch with graphs on, beside the plain command: the distributed path captures and
    replays, and what it costs."""
    from .harness import main as bench

    graphs = "on" if device == "cuda" else "off"
    bench(["scaling", "--history", "off", "--device", device, "--nproc", "1", "--batch-per-rank", "128",
           "--iterations", str(iterations), "--log-every", str(iterations // 6), "--out", str(out / "torchrun.json"),
           "--", "--graphs", graphs])


def penalty_cost_check(out, log, device="cuda"):
    """R3GAN's objective on DCGAN-64: what R1 + R2 on every D step cost, explicit against double backward."""
    from ..engine.io import atomic_write_text
    from .penalty_cost import markdown_table, measure

    results = measure("dcgan-64", 64, device, iters=10, repeats=3)
    atomic_write_text(out / "penalty-cost.json", json.dumps(results, indent=1) + "\n")
    log(markdown_table(results))


def add_arguments(parser):
    parser.add_argument("--budget-s", type=float, default=420,
                        help="seconds after which no new phase starts (the whole check stays under 8 minutes)")
    parser.add_argument("--tests-timeout-s", type=float, default=150, help="limit for the GPU tests")


def run(args):
    """`ganforge bench gpu-check --out DIR`: every phase's files go to DIR (required)."""
    if not args.out:
        raise ValueError("gpu-check needs --out DIR, the folder for its results")
    start = time.monotonic()
    deadline = start + args.budget_s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(line):
        print(f"[{time.monotonic() - start:6.1f}s] {line}", flush=True)

    env = environment()
    (out / "env.json").write_text(json.dumps(env, indent=2) + "\n")
    log(f"environment: {env.get('gpu', 'no GPU')}, torch {env['torch']}, triton {env['triton']}")
    if not env["cuda_available"]:
        log("no CUDA device: GPU tests and GPU benchmarks skipped")
        return 0
    test_outcome = {}

    def gpu_tests():
        # The tests run after the headline rows: they get what is left of the budget, within their own limit.
        left = deadline + 40 - time.monotonic()
        test_outcome["code"], summary = run_gpu_tests(out, max(30.0, min(args.tests_timeout_s, left)))
        log(f"gpu tests (exit {test_outcome['code']}): {summary}")
        # Then the default recipe's time to quality and the torchrun launch, before the batch sweep.
        if time.monotonic() < deadline - 90:
            run_phase(log, "quality row", quality_row, out, log)
        if time.monotonic() < deadline - 60:
            run_phase(log, "torchrun launch", torchrun_check, out)
        if time.monotonic() < deadline - 45:
            run_phase(log, "penalty cost", penalty_cost_check, out, log)
        if time.monotonic() < deadline - 30:
            run_phase(log, "counts", counts_check, out, log)

    results = run_benchmarks(out, deadline, log, between=gpu_tests)
    code = test_outcome.get("code", "not run")
    from .report import report_markdown

    print(report_markdown(results), flush=True)
    log("done")
    return 0 if code == 0 else 1
