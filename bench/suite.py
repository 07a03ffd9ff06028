"""`ganforge bench kernels|train|all`: ceilings first, then kernel rows and/or training rows, into one results file."""
import datetime
import time

import torch

from .kernel_bench import kernel_rows
from .results import new_results
from .timing import copy_bandwidth_gbps, matmul_tflops

WHAT = ("kernels", "train", "all")


def resolve_device(name=None):
    """The engine's device rule ("auto": CUDA when present; a clear error for CUDA without a GPU), cpu/cuda only."""
    from ..engine.devices import resolve_device as resolve_engine_device

    device = resolve_engine_device(name or "auto")
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"--device must be cuda or cpu, got {name!r}")
    return device


def measure_ceilings(device, quick=False):
    """What the device can do at best, measured now: copy bandwidth (read + write) and matrix-product rates.

    Every GB/s and MFU figure of the run is quoted against these, so they come from the same run.
    """
    device = torch.device(device)
    on_gpu = device.type == "cuda"
    copy_bytes = (2 << 30 if not quick else 1 << 30) if on_gpu else (16 << 20 if quick else 64 << 20)
    matmul_n = 8192 if on_gpu else (256 if quick else 512)
    ceilings = {
        "copy_gbps": copy_bandwidth_gbps(device, copy_bytes),
        "matmul_tflops_bf16": matmul_tflops(device, torch.bfloat16, matmul_n),
        "matmul_tflops_fp32": matmul_tflops(device, torch.float32, matmul_n),
        "copy_bytes": copy_bytes,
        "matmul_n": matmul_n,
        # Whether fp32 products may use TF32 tensor cores: the fp32 rate means different things either way.
        "tf32_matmul": bool(on_gpu and torch.backends.cuda.matmul.allow_tf32),
    }
    if on_gpu:
        torch.cuda.empty_cache()
    return ceilings


def run_suite(what, device=None, quick=False, log=print, **train_overrides):
    """Run ``what`` ("kernels", "train" or "all") and return the results dict (see bench.results)."""
    if what not in WHAT:
        raise ValueError(f"bench: expected one of {WHAT}, got {what!r}")
    device = resolve_device(device)
    results = new_results(device, quick)
    t0 = time.perf_counter()
    log(f"bench {what} on {results['device']} (torch {results['torch']}, triton {results['triton']})"
        + (", quick" if quick else ""))
    results["ceilings"] = measure_ceilings(device, quick)
    c = results["ceilings"]
    log(f"  ceilings: copy {c['copy_gbps']:,.1f} GB/s, matmul bf16 {c['matmul_tflops_bf16']:.3g} TFLOP/s, "
        f"fp32 {c['matmul_tflops_fp32']:.3g} TFLOP/s")
    if what in ("kernels", "all"):
        t = time.perf_counter()
        results["kernels"] = kernel_rows(device, quick=quick, copy_gbps=c["copy_gbps"])
        log(f"  kernels: {len(results['kernels'])} rows in {time.perf_counter() - t:.1f} s")
    if what in ("train", "all"):
        from .train_bench import train_rows  # imports the engine only when training is benchmarked

        t = time.perf_counter()
        results["train"] = train_rows(device, quick, c["matmul_tflops_bf16"], log=log,
                                      matmul_tflops_fp32=c["matmul_tflops_fp32"], **train_overrides)
        log(f"  train: {len(results['train'])} rows in {time.perf_counter() - t:.1f} s")
    results["seconds"] = round(time.perf_counter() - t0, 1)
    return results


def _csv(kind):
    def parse(text):
        return tuple(kind(v) for v in text.split(",") if v.strip())
    return parse


def add_arguments(parser):
    """The training selection (kernels take only the shared options)."""
    train = parser.add_argument_group("training rows (train, all)")
    train.add_argument("--models", type=_csv(str), help="comma-separated subset of mlp-28,dcgan-28,dcgan-32,dcgan-64")
    train.add_argument("--batch-sizes", type=_csv(int), help="comma-separated batch sizes")
    train.add_argument("--columns", type=_csv(str),
                       help="subset of eager-fp32,eager-bf16,compile,compile-graphs,ganforge,graphs-ref,"
                            "eager-explicit,compile-explicit,steps,loop (docs/benchmarks.md says what each runs)")
    train.add_argument("--penalties", type=_csv(str),
                       help="objectives, a subset of none,wgan-gp,r1,default (default: the train recipe)")
    train.add_argument("--iters", type=int, help="iterations per timed block")


def run(args):
    """Measure, validate, write the results file and the history, print the tables."""
    from .harness import finish
    from .report import report_markdown
    from .results import validate_results

    device = resolve_device(args.device)
    results = run_suite(args.case, device, args.quick, models=args.models, batch_sizes=args.batch_sizes,
                        columns=args.columns, objectives=args.penalties, iters=args.iters, repeats=args.repeats)
    validate_results(results)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    print()
    finish(args, results, f"runs/bench/{args.case}-{device.type}-{stamp}.json", report_markdown)
    return 0
