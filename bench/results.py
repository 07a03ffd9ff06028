"""The results file of `ganforge bench`: what it records about the run, and a hand-written schema check.

One JSON object per run:

    {"schema": "ganforge-bench/1", "device": ..., "device_type": "cuda" | "cpu", "torch": ..., "triton": ...,
     "python": ..., "git_commit": ... | null, "command": "ganforge bench ...", "date": ISO-8601, "quick": bool, "notes": [str],
     "ceilings": {"copy_gbps", "matmul_tflops_bf16", "matmul_tflops_fp32", ...},
     "kernels": [kernel row], "train": [train row]}

Kernel rows come from bench.kernel_bench.kernel_rows; train rows from bench.train_bench.train_rows. A figure
may be null when its row was skipped or failed; the row then says why under "skipped" or "error".
"""
import json
import platform
from numbers import Real
from pathlib import Path

import torch

from ..engine.io import atomic_write_json
from ..engine.provenance import provenance
from ..engine.devices import cpu_bf16_units

SCHEMA = "ganforge-bench/1"

TOP_LEVEL = {"schema": str, "device": str, "device_type": str, "torch": str, "triton": (str, type(None)),
             "git_commit": (str, type(None)), "date": str, "quick": bool, "ceilings": dict, "kernels": list,
             "train": list}
CEILING_KEYS = ("copy_gbps", "matmul_tflops_bf16", "matmul_tflops_fp32")

KERNEL_KEYS = ("op", "pass", "impl", "numel", "dtype", "shape")
KERNEL_FIGURES = ("median_ms", "p20_ms", "p80_ms", "spread", "bytes", "gbps", "pct_of_copy")

TRAIN_KEYS = ("name", "model", "data_shape", "loss", "penalty", "batch_size", "column", "precision", "graphs",
              "kernels", "compiled", "iters", "repeats")
TRAIN_FIGURES = ("images_per_sec", "images_per_sec_p20", "images_per_sec_p80", "spread", "ms_per_iter",
                 "ms_per_d_step", "ms_per_g_step", "peak_mem_mb", "flops_per_iter", "tflops", "mfu",
                 "speedup_vs_eager_fp32", "speedup_vs_best_other")
# Figures later rows carry (older files lack them): a number or null where present. compile_s: a compiled column's
# seconds of compilation in its warm-up; timed_compiles: compilations counted inside its timed blocks (0, or the
# row has no figure); loop_efficiency: the loop column's images/s over the steps column's.
TRAIN_LATER_FIGURES = ("compile_s", "timed_compiles", "loop_efficiency")


class ResultsError(ValueError):
    """A results file does not follow the schema; the message lists every problem found."""


def device_name(device):
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    units = cpu_bf16_units()
    bf16 = f", native bf16: {' + '.join(units)}" if units else ", no native bf16"
    return f"cpu: {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads{bf16})"


def new_results(device, quick):
    """The header of a results file, with empty ceilings and rows for the suite to fill."""
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "schema": SCHEMA,
        "device": device_name(device),
        "device_type": torch.device(device).type,
        **provenance(),
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "quick": bool(quick),
        "notes": [],
        "ceilings": {},
        "kernels": [],
        "train": [],
    }


def _is_number(value):
    return isinstance(value, Real) and not isinstance(value, bool)


def _check_rows(rows, section, keys, figures, problems, later_figures=()):
    for i, row in enumerate(rows):
        where = f"{section}[{i}]"
        if not isinstance(row, dict):
            problems.append(f"{where}: expected an object, got {type(row).__name__}")
            continue
        for key in keys + figures:
            if key not in row:
                problems.append(f"{where}: missing key {key!r}")
        for key in figures + tuple(k for k in later_figures if k in row):
            value = row.get(key)
            if value is not None and not _is_number(value):
                problems.append(f"{where}.{key}: expected a number or null, got {value!r}")
        failed = row.get("error") or row.get("skipped")
        lead = "median_ms" if section == "kernels" else "images_per_sec"
        if row.get(lead) is None and not failed:
            problems.append(f"{where}: {lead} is null but the row gives no 'error' or 'skipped' reason")


def validate_results(data):
    """Check ``data`` against the results schema; return it, or raise ResultsError listing every problem."""
    if not isinstance(data, dict):
        raise ResultsError(f"results: expected a JSON object, got {type(data).__name__}")
    problems = []
    for key, kind in TOP_LEVEL.items():
        if key not in data:
            problems.append(f"missing top-level key {key!r}")
        elif not isinstance(data[key], kind):
            problems.append(f"{key}: unexpected type {type(data[key]).__name__}")
    if "command" in data and not isinstance(data["command"], str):  # files before 2026-12-01 lack it
        problems.append(f"command: expected the command line as a string, got {data['command']!r}")
    if data.get("schema") not in (None, SCHEMA):
        problems.append(f"schema: expected {SCHEMA!r}, got {data.get('schema')!r}")
    ceilings = data.get("ceilings")
    if isinstance(ceilings, dict):
        for key in CEILING_KEYS:
            if not _is_number(ceilings.get(key)) or ceilings[key] <= 0:
                problems.append(f"ceilings.{key}: expected a positive number, got {ceilings.get(key)!r}")
    if isinstance(data.get("kernels"), list):
        _check_rows(data["kernels"], "kernels", KERNEL_KEYS, KERNEL_FIGURES, problems)
    if isinstance(data.get("train"), list):
        _check_rows(data["train"], "train", TRAIN_KEYS, TRAIN_FIGURES, problems, TRAIN_LATER_FIGURES)
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise ResultsError("results do not follow schema " + SCHEMA + ":\n  " + "\n  ".join(shown))
    return data


def save_results(data, path):
    return atomic_write_json(path, data, indent=1)


def write_and_report(results, path, markdown_table):
    """A bench entry's last step: its results JSON written whole, its table printed, the path named."""
    atomic_write_json(path, results, indent=1)
    print(markdown_table(results), end="")
    print(f"results written to {path}")


def load_results(path):
    """Read and validate a results file; a file that is not JSON or not a results file raises ResultsError."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ResultsError(f"cannot read results file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path} is not JSON: {exc}") from None
    try:
        return validate_results(data)
    except ResultsError as exc:
        raise ResultsError(f"{path}: {exc}") from None
