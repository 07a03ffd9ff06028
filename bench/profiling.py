"""`ganforge profile`: a torch.profiler trace of a few training iterations and a per-kernel time table.

Steps run eagerly (graphs off) so the named ranges of engine.steps ("D forward", "D backward", "penalty",
"D optimizer", "G forward", "G backward", "G optimizer", "EMA") show in the trace around their kernels.
Outputs in the --out folder:

    trace.json     chrome trace (open in chrome://tracing or https://ui.perfetto.dev)
    kernels.json   per-kernel table: self time (device time on GPU, CPU time on CPU), calls, share
    kernels.txt    the same table as text, with the named ranges

`ganforge profile diff A.json B.json` compares two kernels.json files and lists the kernels that got slower.
"""
import json
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from ..engine.io import atomic_write_text, read_json_document

from .report import markdown_table
from .timing import sync

PROFILE_SCHEMA = "ganforge-profile/1"
STEP_RANGES = ("D forward", "D backward", "penalty", "D optimizer", "G forward", "G backward", "G optimizer", "EMA")
ITERATION_RANGE = "iteration"


def _is_annotation(event):
    # Named ranges (record_function) are not kernels; older torch lacks the flag, so names are checked too.
    return bool(getattr(event, "is_user_annotation", False)) or event.key in STEP_RANGES + (ITERATION_RANGE,) \
        or event.key.startswith("ProfilerStep")


def kernel_table(prof, on_gpu, iterations):
    """Rows of {name, calls, self_ms, ms_per_step, share}, slowest first, from a finished profiler."""
    events = prof.key_averages()
    rows = []
    for event in events:
        if _is_annotation(event):
            continue
        if on_gpu:
            # Device-side entries: the kernels (and memcpy/memset) themselves, timed on the GPU.
            if getattr(event, "device_type", None) != torch.autograd.DeviceType.CUDA:
                continue
            self_us = event.self_device_time_total
        else:
            self_us = event.self_cpu_time_total
        if self_us <= 0:
            continue
        rows.append({"name": event.key, "calls": event.count, "self_ms": self_us / 1e3})
    total = sum(r["self_ms"] for r in rows)
    for r in rows:
        r["ms_per_step"] = r["self_ms"] / iterations
        r["share"] = r["self_ms"] / total if total > 0 else 0.0
    rows.sort(key=lambda r: r["self_ms"], reverse=True)
    return rows, total


def range_table(prof, iterations):
    """The named ranges: calls and inclusive CPU time per iteration (and device time under them on GPU)."""
    rows = []
    for event in prof.key_averages():
        if event.key in STEP_RANGES or event.key == ITERATION_RANGE:
            # On GPU a range also appears as a device-side annotation; keep the host-side entry only.
            if getattr(event, "device_type", torch.autograd.DeviceType.CPU) != torch.autograd.DeviceType.CPU:
                continue
            rows.append({"name": event.key, "calls": event.count,
                         "cpu_ms_per_step": event.cpu_time_total / 1e3 / iterations,
                         "device_ms_per_step": getattr(event, "device_time_total", 0) / 1e3 / iterations})
    order = {name: i for i, name in enumerate((ITERATION_RANGE,) + STEP_RANGES)}
    return sorted(rows, key=lambda r: order[r["name"]])


def synthetic_dataset_for(cfg):
    """Random images shaped like the configured data (default 1x28x28), for profiling without data files."""
    from .train_bench import bench_dataset

    size = cfg.image_size or 28
    channels = cfg.channels or 1
    return bench_dataset((channels, size, size), cfg.batch_size)


def profile_training(cfg, out_dir, steps_to_profile=5, warmup=3, dataset=None, log=print):
    """Profile ``steps_to_profile`` iterations after ``warmup``; write trace.json, kernels.json, kernels.txt."""
    from ..engine.session import build_session, run_iteration

    if cfg.graphs == "on":
        log("profile: graphs off, so that the named step ranges are visible around their kernels")
    cfg.graphs = "off"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    session = build_session(cfg, dataset=dataset)
    on_gpu = session.device.type == "cuda"
    for i in range(warmup):
        run_iteration(session, i)
    sync(session.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        for i in range(warmup, warmup + steps_to_profile):
            with record_function(ITERATION_RANGE):
                run_iteration(session, i)
        sync(session.device)  # every queued kernel ends inside the profiled window
    trace_path = out_dir / "trace.json"
    prof.export_chrome_trace(str(trace_path))
    kernels, total_ms = kernel_table(prof, on_gpu, steps_to_profile)
    ranges = range_table(prof, steps_to_profile)
    data = {
        "schema": PROFILE_SCHEMA,
        "device": torch.cuda.get_device_name(session.device) if on_gpu else "cpu",
        "torch": torch.__version__,
        "time_basis": "self device time" if on_gpu else "self CPU time",
        "steps_profiled": steps_to_profile,
        "warmup": warmup,
        "precision": session.precision,
        "config": cfg.to_dict(),
        "total_ms_per_step": total_ms / steps_to_profile,
        "kernels": kernels,
        "ranges": ranges,
    }
    atomic_write_text(out_dir / "kernels.json", json.dumps(data, indent=1) + "\n")
    text = format_profile(data)
    atomic_write_text(out_dir / "kernels.txt", text + "\n")
    return data, text


def _short(name, width=80):
    return name if len(name) <= width else name[: width - 3] + "..."


def format_profile(data, top=30):
    head = (f"{data['device']} · {data['config']['model']} batch {data['config']['batch_size']} · "
            f"{data['precision']} · {data['steps_profiled']} iterations · {data['time_basis']}: "
            f"{data['total_ms_per_step']:.3f} ms per iteration")
    rows = [[_short(k["name"]), k["calls"], f"{k['ms_per_step']:.4f}", f"{k['share']:.1%}"]
            for k in data["kernels"][:top]]
    parts = [head, "", markdown_table(["kernel", "calls", "ms/iteration", "share"], rows, "lrrr")]
    if len(data["kernels"]) > top:
        parts.append(f"... {len(data['kernels']) - top} more in kernels.json")
    if data["ranges"]:
        ranges = [[r["name"], r["calls"], f"{r['cpu_ms_per_step']:.3f}", f"{r['device_ms_per_step']:.3f}"]
                  for r in data["ranges"]]
        parts += ["", markdown_table(["range", "calls", "host ms/iteration", "device ms/iteration"], ranges, "lrrr")]
    return "\n".join(parts)


def load_profile(path):
    return read_json_document(path, PROFILE_SCHEMA, "kernels", "kernels.json written by `ganforge profile`")


def diff_profiles(a, b, threshold=0.10, min_ms=0.001):
    """Per kernel, ms per iteration in A and B; "slower" beyond ``threshold`` and ``min_ms`` (tiny kernels jitter)."""
    ka = {k["name"]: k for k in a["kernels"]}
    kb = {k["name"]: k for k in b["kernels"]}
    entries = []
    for name in list(ka) + [n for n in kb if n not in ka]:
        ta = ka[name]["ms_per_step"] if name in ka else None
        tb = kb[name]["ms_per_step"] if name in kb else None
        if ta is None:
            status = "new"
        elif tb is None:
            status = "gone"
        elif tb - ta > min_ms and tb > ta * (1 + threshold):
            status = "slower"
        elif ta - tb > min_ms and ta > tb * (1 + threshold):
            status = "faster"
        else:
            status = "same"
        entries.append({"name": name, "a_ms": ta, "b_ms": tb, "delta_ms": (tb or 0.0) - (ta or 0.0), "status": status})
    entries.sort(key=lambda e: e["delta_ms"], reverse=True)  # biggest added time first
    return entries


def format_diff(entries, a, b, top=25):
    total = f"total {a['total_ms_per_step']:.3f} -> {b['total_ms_per_step']:.3f} ms per iteration"
    lines = [f"A: {a['device']} · {a['time_basis']}", f"B: {b['device']} · {b['time_basis']}", total]
    slower = [e for e in entries if e["status"] in ("slower", "new")]
    rows = [[_short(e["name"]), "–" if e["a_ms"] is None else f"{e['a_ms']:.4f}",
             "–" if e["b_ms"] is None else f"{e['b_ms']:.4f}", f"{e['delta_ms']:+.4f}",
             "–" if not e["a_ms"] or e["b_ms"] is None else f"{e['b_ms'] / e['a_ms'] - 1:+.0%}", e["status"]]
            for e in entries if e["status"] != "same"][:top]
    lines += ["", markdown_table(["kernel", "A ms/it", "B ms/it", "delta", "change", "status"], rows, "lrrrrl")
              if rows else "(no kernel changed beyond the threshold)"]
    lines += ["", f"{sum(e['status'] == 'slower' for e in entries)} kernel(s) slower, "
                  f"{len(slower) - sum(e['status'] == 'slower' for e in entries)} new"]
    return "\n".join(lines)
