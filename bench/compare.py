"""Compare two results files figure by figure and flag regressions.

Tracked figures: each kernel row's median_ms, keyed by (op, pass, impl, numel, dtype, shape), and each training
row's images_per_sec, keyed by (model config, penalty, batch size, column). Both are turned into "how much
slower": new/base time - 1 for kernels, base/new throughput - 1 for training.

A figure regresses when it is slower by more than the threshold AND by more than the measured spread
((p80 - p20) / median) of either run: a change inside the run-to-run noise is reported but not flagged.
"""
from .report import markdown_table
from .results import ResultsError, load_results

FAILING = ("REGRESSION", "FAILED")  # statuses that make `ganforge bench compare` exit non-zero


def parse_threshold(text):
    """"10%", "10" and "0.1" all mean ten percent."""
    text = str(text).strip()
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise ValueError(f"--threshold must be a percentage like 10% or a fraction like 0.1, got {text!r}") from None
    if text.endswith("%") or value >= 1:
        value /= 100
    if not 0 <= value < 10:
        raise ValueError(f"--threshold out of range: {text!r}")
    return value


def kernel_key(row):
    shape = row.get("shape")
    shape = "x".join(str(s) for s in shape) if isinstance(shape, (list, tuple)) else str(shape)
    return ("kernel", row["op"], row["pass"], row["impl"], row["numel"], row["dtype"], shape)


def train_key(row):
    return ("train", row["name"], row.get("objective", row["penalty"]), row["batch_size"], row["column"])


def _label(key):
    if key[0] == "kernel":
        _, op, pass_, impl, numel, dtype, shape = key
        return f"{op} {pass_} {impl} {dtype} {shape}"
    _, name, penalty, batch, column = key
    return f"{name} {penalty} b{batch} {column}"


def tracked_figures(results):
    """{key: (value, spread, lower_is_better)} for every tracked figure of a results dict."""
    figures = {}
    for row in results["kernels"]:
        figures[kernel_key(row)] = (row.get("median_ms"), row.get("spread"), True)
    for row in results["train"]:
        figures[train_key(row)] = (row.get("images_per_sec"), row.get("spread"), False)
    return figures


def compare_results(base, new, threshold=0.10):
    """One entry per tracked figure in either run: values, slowdown, noise band and a status.

    Status: REGRESSION (slower beyond threshold and noise), FAILED (a figure in BASE, none in NEW: the row
    errored or was skipped), slower-noise (beyond threshold, inside the noise), faster, fixed (none in BASE,
    a figure in NEW), ok, new (only in NEW), gone (only in BASE).
    """
    base_figs, new_figs = tracked_figures(base), tracked_figures(new)
    entries = []
    for key in list(base_figs) + [k for k in new_figs if k not in base_figs]:
        b, n = base_figs.get(key), new_figs.get(key)
        entry = {"key": key, "label": _label(key), "figure": "median_ms" if key[0] == "kernel" else "images_per_sec",
                 "base": b[0] if b else None, "new": n[0] if n else None, "slowdown": None, "noise": None}
        if b is None:
            entry["status"] = "new"
        elif n is None:
            entry["status"] = "gone"
        elif not b[0] or not n[0]:
            # A figure that existed and now fails (error or skip) is worse than slow: it counts as a regression.
            entry["status"] = "FAILED" if b[0] else ("fixed" if n[0] else "ok")
        else:
            lower_is_better = b[2]
            slowdown = n[0] / b[0] - 1 if lower_is_better else b[0] / n[0] - 1
            noise = max(b[1] or 0.0, n[1] or 0.0)
            entry.update(slowdown=slowdown, noise=noise)
            if slowdown > threshold and slowdown > noise:
                entry["status"] = "REGRESSION"
            elif slowdown > threshold:
                entry["status"] = "slower-noise"
            elif -slowdown > threshold and -slowdown > noise:
                entry["status"] = "faster"
            else:
                entry["status"] = "ok"
        entries.append(entry)
    return entries


def format_comparison(entries, base, new, threshold, only_changes=False):
    lines = [f"base: {base['device']} · {base['date']} · commit {(base.get('git_commit') or 'unknown')[:12]}",
             f"new:  {new['device']} · {new['date']} · commit {(new.get('git_commit') or 'unknown')[:12]}",
             f"threshold {threshold:.0%}, and beyond the measured spread of both runs"]
    if base["device"] != new["device"]:
        lines.append("warning: the runs are on different devices; changes may be the hardware, not the code")
    rows = []
    for e in entries:
        if only_changes and e["status"] == "ok":
            continue
        spec = ".4f" if e["figure"] == "median_ms" else ",.0f"
        rows.append([e["label"], e["figure"], "–" if e["base"] is None else format(e["base"], spec),
                     "–" if e["new"] is None else format(e["new"], spec),
                     "–" if e["slowdown"] is None else f"{e['slowdown']:+.1%}",
                     "–" if e["noise"] is None else f"{e['noise']:.1%}", e["status"]])
    headers = ["figure", "metric", "base", "new", "slower by", "noise", "status"]
    lines += ["", markdown_table(headers, rows, "llrrrrl") if rows else "(no changes)"]
    regressions = [e for e in entries if e["status"] in FAILING]
    lines += ["", f"{len(regressions)} regression(s) in {len(entries)} tracked figures"]
    return "\n".join(lines)


def compare_files(base_path, new_path, threshold="10%", only_changes=False, out=print):
    """Print the comparison; return the exit code: 0 no regression, 1 regressions, 2 unreadable input."""
    try:
        threshold = parse_threshold(threshold)
        base, new = load_results(base_path), load_results(new_path)
    except (ResultsError, ValueError) as exc:
        out(f"bench compare: error: {exc}")
        return 2
    entries = compare_results(base, new, threshold)
    out(format_comparison(entries, base, new, threshold, only_changes))
    return 1 if any(e["status"] in FAILING for e in entries) else 0
