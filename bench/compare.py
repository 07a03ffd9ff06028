"""Compare two results files figure by figure and flag regressions (and unexplained improvements).

    ganforge bench compare BASE.json NEW.json [--threshold 10%] [--noise NOISE.json] [--only-changes]
                                              [--fail-on-improvement] [--out COMPARISON.json]

Tracked figures: each kernel row's median_ms, keyed by (op, pass, impl, numel, dtype, shape), and each training
row's images_per_sec, keyed by (model config, objective, batch size, column). Both are turned into "how much
slower": new/base time - 1 for kernels, base/new throughput - 1 for training.

The bound a change must pass to count:
  - with --noise (a file of `ganforge bench noise`): max(threshold, 3 x that row's measured noise on the
    machine); a row the noise file lacks falls back to the threshold, and the table says so;
  - without it: the threshold AND the measured spread ((p80 - p20) / median) of either run.
Slower beyond the bound is a REGRESSION (exit 1); faster beyond it (by the same factor: base/new time - 1)
is IMPROVED (exit 1 only with --fail-on-improvement: an unexplained improvement means the baseline is stale or
the measurement is wrong).
"""
import math

from ..engine.io import atomic_write_json, read_json_document
from .report import markdown_table
from .results import ResultsError, load_results

FAILING = ("REGRESSION", "FAILED")  # statuses that make `ganforge bench compare` exit non-zero
NOISE_SCHEMA = "ganforge-noise/1"
NOISE_FACTOR = 3  # a change must exceed this many times the row's measured noise to count
KERNEL_FIELDS = ("op", "pass", "impl", "numel", "dtype", "shape")
TRAIN_FIELDS = ("name", "objective", "batch_size", "column")


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


def key_fields(key):
    """The named fields of a key from kernel_key or train_key (what a noise file stores beside the key)."""
    names = KERNEL_FIELDS if key[0] == "kernel" else TRAIN_FIELDS
    return dict(zip(names, key[1:]))


def section_of(key):
    return "kernels" if key[0] == "kernel" else "train"


def figure_of(key):
    return "median_ms" if key[0] == "kernel" else "images_per_sec"


def label(key):
    if key[0] == "kernel":
        _, op, pass_, impl, numel, dtype, shape = key
        return f"{op} {pass_} {impl} {dtype} {shape}"
    _, name, penalty, batch, column = key
    return f"{name} {penalty} b{batch} {column}"


_label = label  # the name other modules knew


def tracked_figures(results):
    """{key: (value, spread, lower_is_better)} for every tracked figure of a results dict."""
    figures = {}
    for row in results["kernels"]:
        figures[kernel_key(row)] = (row.get("median_ms"), row.get("spread"), True)
    for row in results["train"]:
        figures[train_key(row)] = (row.get("images_per_sec"), row.get("spread"), False)
    return figures


def load_noise(path):
    """The noise file of `ganforge bench noise` as (header, {key: noise or None}); raises ValueError if unreadable."""
    data = read_json_document(path, NOISE_SCHEMA, "rows", "noise file")
    noise = {}
    for row in data["rows"]:
        noise[tuple(row["key"])] = row.get("noise")
    return data, noise


def _bound(key, threshold, noise, base_fig, new_fig):
    """(bound, the noise figure shown, where the bound came from) for one row."""
    if noise is None:  # no noise file: the runs' own spreads, the bound being the larger of it and the threshold
        spread = max(base_fig[1] or 0.0, new_fig[1] or 0.0)
        return max(threshold, spread), spread, "threshold + spread"
    row_noise = noise.get(key)
    if row_noise is None:
        return threshold, None, "threshold (no noise row)"
    bound = max(threshold, NOISE_FACTOR * row_noise)
    return bound, row_noise, (f"{NOISE_FACTOR}x noise" if bound > threshold else "threshold")


def _status(slowdown, threshold, bound):
    # Faster is measured as the mirror of slower (1.5x faster is +50%, as 1.5x slower is), so one bound serves
    # both ways: 1 - new/base time would never pass a bound above 100%.
    faster_by = 1 / (1 + slowdown) - 1
    if slowdown > bound:
        return "REGRESSION"
    if faster_by > bound:
        return "IMPROVED"
    if slowdown > threshold:
        return "slower-noise"
    return "faster-noise" if faster_by > threshold else "ok"


def _entry(key, b, n, threshold, noise):
    entry = {"key": key, "label": label(key), "section": section_of(key), "figure": figure_of(key),
             "base": b[0] if b else None, "new": n[0] if n else None, "ratio": None, "slowdown": None,
             "noise": None, "bound": None, "bound_source": None}
    if b is None:
        entry["status"] = "new"
    elif n is None:
        entry["status"] = "gone"
    elif not b[0] or not n[0]:
        # A figure that existed and now fails (error or skip) is worse than slow: it counts as a regression.
        entry["status"] = "FAILED" if b[0] else ("fixed" if n[0] else "ok")
    else:
        slowdown = n[0] / b[0] - 1 if b[2] else b[0] / n[0] - 1
        bound, shown_noise, source = _bound(key, threshold, noise, b, n)
        entry.update(ratio=n[0] / b[0], slowdown=slowdown, noise=shown_noise, bound=bound, bound_source=source,
                     status=_status(slowdown, threshold, bound))
    return entry


def compare_results(base, new, threshold=0.10, noise=None):
    """One entry per tracked figure in either run: values, ratio new/base, slowdown, the bound used and a status.

    ``noise``: {key: relative noise} from load_noise, or None (then the runs' own spreads are the noise band).
    Status: REGRESSION (slower beyond the bound), FAILED (a figure in BASE, none in NEW: the row errored or was
    skipped), IMPROVED (faster beyond the bound), slower-noise / faster-noise (beyond the threshold, inside the
    bound), fixed (none in BASE, a figure in NEW), ok, new (only in NEW), gone (only in BASE).
    """
    base_figs, new_figs = tracked_figures(base), tracked_figures(new)
    keys = list(base_figs) + [k for k in new_figs if k not in base_figs]
    return [_entry(key, base_figs.get(key), new_figs.get(key), threshold, noise) for key in keys]


def geometric_means(entries):
    """{section: geometric mean of new/base over the rows with both figures} (train: images/s, kernels: ms)."""
    logs = {}
    for e in entries:
        if e["ratio"]:
            logs.setdefault(e["section"], []).append(math.log(e["ratio"]))
    return {section: math.exp(sum(values) / len(values)) for section, values in logs.items()}


def _header_lines(base, new, threshold, noise_header):
    lines = [f"base: {base['device']} · {base['date']} · commit {(base.get('git_commit') or 'unknown')[:12]}",
             f"new:  {new['device']} · {new['date']} · commit {(new.get('git_commit') or 'unknown')[:12]}"]
    if noise_header is None:
        lines.append(f"bound: threshold {threshold:.0%}, and beyond the measured spread of both runs")
    else:
        lines.append(f"bound: max(threshold {threshold:.0%}, {NOISE_FACTOR} x each row's noise) from "
                     f"{noise_header.get('runs')} runs on {noise_header.get('device')} "
                     f"({str(noise_header.get('date'))[:10]}); rows without noise use the threshold")
        if noise_header.get("device") not in (base["device"], new["device"]):
            lines.append("warning: the noise was measured on another device; its bounds may not fit these runs")
    if base["device"] != new["device"]:
        lines.append("warning: the runs are on different devices; changes may be the hardware, not the code")
    return lines


def _row_cells(e):
    spec = ".4f" if e["figure"] == "median_ms" else ",.0f"

    def show(value, fmt):
        return "–" if value is None else format(value, fmt)

    bound = "–" if e["bound"] is None else f"{e['bound']:.1%} ({e['bound_source']})"
    return [e["label"], e["figure"], show(e["base"], spec), show(e["new"], spec), show(e["ratio"], ".3f"),
            show(e["slowdown"], "+.1%"), show(e["noise"], ".1%"), bound, e["status"]]


def format_comparison(entries, base, new, threshold, only_changes=False, noise_header=None,
                      fail_on_improvement=False):
    lines = _header_lines(base, new, threshold, noise_header)
    rows = [_row_cells(e) for e in entries if not (only_changes and e["status"] == "ok")]
    headers = ["figure", "metric", "base", "new", "new/base", "slower by", "noise", "bound", "status"]
    lines += ["", markdown_table(headers, rows, "llrrrrrll") if rows else "(no changes)"]
    means = geometric_means(entries)
    meaning = {"train": "images/s, above 1 is faster", "kernels": "ms, below 1 is faster"}
    for section in ("train", "kernels"):
        if section in means:
            lines.append(f"geometric mean new/base, {section}: {means[section]:.3f} ({meaning[section]})")
    regressions = [e for e in entries if e["status"] in FAILING]
    improvements = [e for e in entries if e["status"] == "IMPROVED"]
    lines += ["", f"{len(regressions)} regression(s), {len(improvements)} improvement(s) in {len(entries)} "
                  f"tracked figures"]
    for e in regressions:
        lines.append(f"regression: {e['label']} {e['figure']} ({e['status']})")
    if improvements and fail_on_improvement:
        lines.append("improvements beyond the bound fail the check: if they are real, make NEW the baseline")
    return "\n".join(lines)


def exit_code(entries, fail_on_improvement=False):
    failing = FAILING + (("IMPROVED",) if fail_on_improvement else ())
    return 1 if any(e["status"] in failing for e in entries) else 0


def comparison_json(entries, paths, threshold, noise_path, code):
    """What --out holds: the inputs, the bound rule, every entry (keys as lists) and the exit code."""
    rows = [dict(e, key=list(e["key"]), fields=key_fields(e["key"])) for e in entries]
    return {"schema": "ganforge-compare/1", "base": str(paths[0]), "new": str(paths[1]), "threshold": threshold,
            "noise_file": None if noise_path is None else str(noise_path), "noise_factor": NOISE_FACTOR,
            "geometric_means": geometric_means(entries), "exit_code": code, "rows": rows}


def compare_files(base_path, new_path, threshold="10%", only_changes=False, out=print, noise_path=None,
                  fail_on_improvement=False, json_out=None):
    """Print the comparison; return the exit code: 0 pass, 1 regressions (or improvements with
    ``fail_on_improvement``), 2 unreadable input. ``json_out``: also write the comparison there."""
    try:
        threshold = parse_threshold(threshold)
        base, new = load_results(base_path), load_results(new_path)
        noise_header, noise = load_noise(noise_path) if noise_path else (None, None)
    except (ResultsError, ValueError) as exc:
        out(f"bench compare: error: {exc}")
        return 2
    entries = compare_results(base, new, threshold, noise)
    out(format_comparison(entries, base, new, threshold, only_changes, noise_header, fail_on_improvement))
    code = exit_code(entries, fail_on_improvement)
    if json_out:
        atomic_write_json(json_out, comparison_json(entries, (base_path, new_path), threshold, noise_path, code),
                          indent=1)
        out(f"comparison written to {json_out}")
    return code


def add_arguments(parser):
    parser.add_argument("base", help="results JSON of the reference")
    parser.add_argument("new", help="results JSON under test")
    parser.add_argument("--threshold", default="10%", help="slowdown that counts as a regression (default 10%%)")
    parser.add_argument("--noise", default=None, metavar="NOISE.json",
                        help="a `ganforge bench noise` file: each row's bound becomes max(threshold, 3 x its noise)")
    parser.add_argument("--only-changes", action="store_true", help="hide unchanged figures")
    parser.add_argument("--fail-on-improvement", action="store_true",
                        help="exit 1 on an improvement beyond the bound too (the baseline needs updating)")


def run(args):
    """`ganforge bench compare`: the shared --out, if given, receives the comparison as JSON."""
    return compare_files(args.base, args.new, args.threshold, args.only_changes, noise_path=args.noise,
                         fail_on_improvement=args.fail_on_improvement, json_out=args.out)
