"""Markdown tables from a results file, and a static page of PNG figures from results files and the history.

    ganforge bench report FILE.json [--section train|kernels|ceilings]      (markdown tables, as printed by the bench)
    ganforge bench report [RESULTS.json ...] --out DIR [--history DB] [--quality FILE ...] [--series TEXT ...]

With --out it writes DIR/index.html and one PNG per figure that has data (training images/s per column, kernel
GB/s against size, figures over commits, FID against training time). Without files named, it reads the newest
committed records under bench/results/ and a history rebuilt from them in a temporary file. A figure without data
is left out of the page with one line saying why.
"""
import json
import sys
from pathlib import Path

from .history import LOWER_IS_BETTER
from .results import SCHEMA, ResultsError, load_results


def markdown_table(headers, rows, align=None):
    """A GitHub markdown table; ``align`` is a string of "l"/"r" per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values):
        padded = [v.ljust(w) if a == "l" else v.rjust(w) for v, w, a in zip(values, widths, align)]
        return "| " + " | ".join(padded) + " |"

    rules = ["-" * (w + 1) + ":" if a == "r" else ":" + "-" * (w + 1) for w, a in zip(widths, align)]
    rule = "|" + "|".join(rules) + "|"
    return "\n".join([line(headers), rule] + [line(r) for r in cells])


def fmt(value, spec=",.2f", none="–"):
    if value is None:
        return none
    return format(value, spec)


def _why(row):
    text = f"skipped: {row['skipped']}" if row.get("skipped") else f"error: {row.get('error')}"
    return text if len(text) <= 100 else text[:97] + "..."


def _gbps(value):
    return fmt(value, ",.0f") if value is not None and value >= 100 else fmt(value, ".3g")


def header_markdown(results):
    commit = results.get("git_commit") or "unknown"
    lines = [f"Device: **{results['device']}** · torch {results['torch']} · triton {results.get('triton') or '–'}"
             + (f" · CUDA {results['cuda']}" if results.get("cuda") else ""),
             f"Date: {results['date']} · commit `{commit[:12]}`" + (" · quick run" if results.get("quick") else "")]
    lines += [f"Note: {note}" for note in results.get("notes", [])]
    return "\n\n".join(lines)


def ceilings_markdown(results):
    c = results["ceilings"]
    rows = [("copy bandwidth (read + write)", f"{fmt(c.get('copy_gbps'), ',.1f')} GB/s"),
            ("matmul bf16", f"{fmt(c.get('matmul_tflops_bf16'), '.3g')} TFLOP/s"),
            ("matmul fp32" + (" (TF32 allowed)" if c.get("tf32_matmul") else ""),
             f"{fmt(c.get('matmul_tflops_fp32'), '.3g')} TFLOP/s")]
    return markdown_table(["ceiling (measured)", "value"], rows)


def train_markdown(results):
    rows = []
    for r in results["train"]:
        config = [r["name"], r.get("objective", r["penalty"]), r["batch_size"], r["column"],
                  r.get("penalty_grad") or "–"]
        if r.get("images_per_sec") is None:
            rows.append(config + ["–"] * 9 + [_why(r)])
            continue
        mem = r.get("peak_mem_mb")
        rows.append(config + [
            f"{r['images_per_sec']:,.0f} ±{r['spread'] / 2:.0%}",
            fmt(r["ms_per_d_step"], ".3f"), fmt(r["ms_per_g_step"], ".3f"),
            fmt(mem, ",.0f") if mem is not None else "–",
            fmt(r["mfu"] * 100 if r.get("mfu") is not None else None, ".1f"),
            fmt(r.get("speedup_vs_eager_fp32"), ".2f") + "x" if r.get("speedup_vs_eager_fp32") else "–",
            fmt(r.get("speedup_vs_best_other"), ".2f") + "x" if r.get("speedup_vs_best_other") else "–",
            fmt(r.get("loop_efficiency"), ".3f"),
            fmt(r.get("compile_s"), ".1f"),  # a compiled column's compile time, apart from its timed blocks
            _settings(r),
        ])
    headers = ["model", "objective", "batch", "column", "penalty grad", "images/s", "ms/D step", "ms/G step", "peak MB",
               "MFU %", "vs eager-fp32", "vs best other", "loop / steps", "compile s", "note"]
    return markdown_table(headers, rows, "llrll" + "r" * 9 + "l")


def _settings(row):
    """What an "auto" column resolved to on the device (the steps and loop columns)."""
    if row.get("column") not in ("steps", "loop"):
        return ""
    graphs = "graphs" if row.get("graphs") else "eager"
    return f"{row.get('precision')}, {graphs}, kernels {row.get('kernels')}"


def kernels_markdown(results):
    """One line per (op, pass, dtype, shape); a time and GB/s column pair per implementation."""
    impls, lines = [], {}
    for r in results["kernels"]:
        if r["impl"] not in impls:
            impls.append(r["impl"])
        shape = r.get("shape")
        shape = "x".join(str(d) for d in shape) if isinstance(shape, (list, tuple)) else str(shape or r["numel"])
        key = (r["op"], r["pass"], r["dtype"], shape)
        lines.setdefault(key, {})[r["impl"]] = r
    headers = ["op", "pass", "dtype", "shape"]
    for impl in impls:
        headers += [f"{impl} ms", f"{impl} GB/s"]
    headers.append("best % of copy")
    rows = []
    for key, by_impl in lines.items():
        row = list(key)
        for impl in impls:
            r = by_impl.get(impl)
            if r is None or r.get("median_ms") is None:
                if r is None:
                    row += ["–", "–"]
                    continue
                skipped = r.get("skipped") or str(r.get("error") or "").startswith("skipped")
                row += ["skipped" if skipped else "error", "–"]
            else:
                row += [fmt(r["median_ms"], ".4f"), _gbps(r.get("gbps"))]
        pcts = [r["pct_of_copy"] for r in by_impl.values() if r.get("pct_of_copy") is not None]
        row.append(fmt(max(pcts), ".3g") if pcts else "–")
        rows.append(row)
    return markdown_table(headers, rows, "llll" + "r" * (len(headers) - 4))


def report_markdown(results, sections=("ceilings", "train", "kernels")):
    parts = [header_markdown(results)]
    if "ceilings" in sections:
        parts += ["### Ceilings", ceilings_markdown(results)]
    if "train" in sections and results["train"]:
        parts += ["### Training throughput",
                  "One iteration = one D step + one G step on synthetic data; MFU against the measured matmul "
                  "rate of the row's precision; ± is half the p20–p80 spread of the repeats.",
                  train_markdown(results)]
    if "kernels" in sections and results["kernels"]:
        parts += ["### Kernels", "Median time; GB/s counts bytes read + written, against the measured copy bandwidth.",
                  kernels_markdown(results)]
    return "\n\n".join(parts) + "\n"




# ---------------------------------------------------------------------------------------------------------------
# Figures: which files, what each figure draws, the page.

RECORDS = Path(__file__).resolve().parent / "results"  # the committed records (bench/results/)
QUALITY_SCHEMA = "ganforge-quality/1"
OWN_COLOUR, OTHER_COLOUR, STRONGEST_COLOUR = "#1f5fa8", "#b9b9b9", "#d1741f"


def shown_path(path):
    """A path as a caption names it: relative to the repository when inside it, else as given."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(RECORDS.parents[1]))
    except ValueError:
        return str(path)


def _json_files(root, schema):
    """(path, data) for every JSON file of ``schema`` one folder below ``root`` (the record folders)."""
    found = []
    for path in sorted(Path(root).glob("*/*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and data.get("schema") == schema:
            found.append((path, data))
    return found


def _newest_record(found, keep, folders=None):
    """The files of the newest record folder (by its newest file's date) among ``found`` that ``keep`` accepts,
    among ``folders`` when given."""
    by_folder = {}
    for path, data in found:
        if keep(data) and (folders is None or path.parent in folders):
            by_folder.setdefault(path.parent, []).append((path, data))
    if not by_folder:
        return []
    newest = max(by_folder, key=lambda folder: (max(str(d.get("date")) for _, d in by_folder[folder]), folder.name))
    return by_folder[newest]


def timed_rows(results, section):
    return [r for r in results.get(section) or [] if isinstance(r, dict) and r.get(
        "images_per_sec" if section == "train" else "gbps") is not None]


def default_results(root=RECORDS):
    """The newest committed results files that carry timed training rows, and those that carry kernel rows."""
    found = _json_files(root, SCHEMA)
    files = {}
    for section in ("train", "kernels"):
        for path, data in _newest_record(found, lambda d, s=section: bool(timed_rows(d, s))):
            files.setdefault(path, data)
    return list(files.items())


def default_quality(root=RECORDS):
    """The quality files of the newest record whose files, together, hold recipes beside the peers."""
    found = _json_files(root, QUALITY_SCHEMA)
    kinds = {}
    for path, data in found:
        kinds.setdefault(path.parent, set()).update(c.get("kind") for c in data.get("curves") or [])
    return _newest_record(found, lambda d: True, [folder for folder, k in kinds.items() if {"recipe", "peer"} <= k])


def load_quality(paths):
    """Time-to-quality files read into curves: ([{name, kind, seconds, fid, file}], real-data floor, headers)."""
    curves, floor, headers = [], None, []
    for path in paths:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        floor = data.get("fid_real_floor", floor)
        headers.append(data)
        for curve in data.get("curves") or []:
            points = sorted((p for p in curve.get("points") or [] if p.get("fid") is not None),
                            key=lambda p: p["train_seconds"])
            if points:
                curves.append({"name": curve["name"], "kind": curve.get("kind", "recipe"), "file": path,
                               "seconds": [p["train_seconds"] for p in points], "fid": [p["fid"] for p in points]})
    return curves, floor, headers


def where_measured(headers):
    """One line per distinct (device, torch, commit, day) of the files: where and when the figures were taken."""
    seen = []
    for data in headers:
        text = (f"{data.get('device') or '?'} · torch {data.get('torch') or '?'} · commit "
                f"{(data.get('git_commit') or 'unknown')[:8]} · {str(data.get('date') or '?')[:10]}")
        if text not in seen:
            seen.append(text)
    more = [f"and {len(seen) - 3} more files' settings (see the caption)"] if len(seen) > 3 else []
    return "\n".join(seen[:3] + more)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or opened
    import matplotlib.pyplot as plt

    return plt


def _grid(plt, count, width, height_each, columns=2):
    """A figure of ``count`` panels, ``columns`` across; returns (figure, the used axes); spare panels hidden."""
    columns = min(columns, count)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(width, height_each * rows + 1.6), squeeze=False)
    flat = [ax for line in axes for ax in line]
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def _save(fig, out_dir, name, plt):
    path = Path(out_dir) / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ganforge's bar in a configuration: its own column, else what `ganforge train` runs (loop, then its steps alone)
GANFORGE_BARS = ("ganforge", "loop", "steps")


def training_groups(results_files):
    """{(model, objective, batch): {"rows", "path", "results"}}: each configuration's rows from the newest file
    (by its date) that measured it, so that two runs of one configuration never share a panel bar by bar."""
    groups = {}
    for path, results in sorted(results_files, key=lambda item: str(item[1].get("date") or "")):
        for row in results.get("train") or []:
            key = (row["name"], row.get("objective") or row.get("penalty"), row["batch_size"])
            if key not in groups or groups[key]["path"] != path:
                groups[key] = {"rows": [], "path": path, "results": results}  # a newer file replaces an older
            groups[key]["rows"].append(row)
    return groups


MAX_PANELS = 12  # beyond this a figure's panels get too small to read


def fewer_panels(groups):
    """At most MAX_PANELS configurations: past that, only the largest batch of each (model, objective)."""
    if len(groups) <= MAX_PANELS:
        return groups
    largest = {}
    for name, objective, batch in groups:
        largest[(name, objective)] = max(batch, largest.get((name, objective), batch))
    kept = [key for key in groups if key[2] == largest[key[:2]]][:MAX_PANELS]
    return {key: groups[key] for key in kept}


def compare_columns(rows):
    """(ganforge's row, the strongest other row, ganforge / strongest) of one configuration; None where absent.

    "Other" is what the bench's own speedup_vs_best_other leaves out (train_bench.OWN_COLUMNS); the ratio is the
    one the bench recorded in ganforge's row, computed here only for rows written without it."""
    from .train_bench import OWN_COLUMNS

    timed = [r for r in rows if r.get("images_per_sec")]
    strongest = max((r for r in timed if r["column"] not in OWN_COLUMNS), key=lambda r: r["images_per_sec"],
                    default=None)
    own = {r["column"]: r for r in timed if r["column"] in OWN_COLUMNS}
    ours = next((own[c] for c in GANFORGE_BARS if c in own), None)
    ours = ours or max(own.values(), key=lambda r: r["images_per_sec"], default=None)
    if ours is None or strongest is None:
        return ours, strongest, None
    ratio = ours.get("speedup_vs_best_other") or ours["images_per_sec"] / strongest["images_per_sec"]
    return ours, strongest, ratio


def _training_panel(ax, key, rows):
    from .train_bench import OWN_COLUMNS

    ours, strongest, ratio = compare_columns(rows)
    top = max((r.get("images_per_sec_p80") or r.get("images_per_sec") or 0) for r in rows) or 1.0
    for y, row in enumerate(rows):
        value = row.get("images_per_sec")
        if value is None:
            ax.text(top * 0.01, y, "not timed: " + ("skipped" if row.get("skipped") else "error"), va="center",
                    fontsize=8, color="#aa2222")
            continue
        colour = STRONGEST_COLOUR if row is strongest else OWN_COLOUR if row["column"] in OWN_COLUMNS \
            else OTHER_COLOUR
        low, high = row.get("images_per_sec_p20"), row.get("images_per_sec_p80")
        whisker = [[value - low], [high - value]] if low is not None and high is not None else None
        ax.barh(y, value, color=colour, xerr=whisker, ecolor="#333333", capsize=3,
                hatch="//" if row is ours else None, edgecolor="white" if row is ours else colour)
        label = f"{value:,.0f}"
        if row is ours and ratio is not None:
            label += f"  ({ratio:.2f}x {strongest['column']})"
        ax.text((high or value) + top * 0.02, y, label, va="center", fontsize=8.5,
                fontweight="bold" if row is ours else "normal")
    ax.set_yticks(range(len(rows)), [r["column"] for r in rows], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.7)
    ax.xaxis.set_major_formatter("{x:,.0f}")
    ax.set_xlabel("images/s (higher is better)")
    ax.set_title(f"{key[0]} · objective {key[1]} · batch {key[2]}", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)


def training_figure(results_files, out_dir):
    """Images/s per column of each training configuration; ganforge's bar carries its ratio to the strongest other."""
    groups = training_groups(results_files)
    if not any(r.get("images_per_sec") for g in groups.values() for r in g["rows"]):
        return None, "no timed training rows in " + _names(results_files)
    configurations = len(groups)
    groups = fewer_panels(groups)
    plt = _pyplot()
    from matplotlib.patches import Patch

    tallest = max(len(g["rows"]) for g in groups.values())
    fig, axes = _grid(plt, len(groups), 13, 0.34 * tallest + 1.3)
    for ax, (key, group) in zip(axes, groups.items()):
        _training_panel(ax, key, group["rows"])
    handles = [Patch(color=OWN_COLOUR, label="ganforge's own columns"),
               Patch(facecolor=OWN_COLOUR, hatch="//", edgecolor="white",
                     label="ganforge (ratio to the strongest other)"),
               Patch(color=STRONGEST_COLOUR, label="strongest other column"),
               Patch(color=OTHER_COLOUR, label="other columns (eager, torch.compile)")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=9, frameon=False)
    headers = [g["results"] for g in groups.values()]
    fig.suptitle("Training throughput per bench column (median of the timed blocks; whiskers p20-p80)\n"
                 + where_measured(headers), fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    files = sorted({shown_path(g["path"]) for g in groups.values()})
    shown = "" if len(groups) == configurations else (
        f"{len(groups)} of {configurations} configurations shown (the largest batch of each model and objective). ")
    caption = (shown + "Images/s of each training configuration (model · objective · batch) for every bench column; "
               "the hatched bar is ganforge's (its own column, else the loop `ganforge train` runs) with its ratio to "
               "the strongest column that is not ganforge's own (orange). From " + ", ".join(files) + ".")
    return _save(fig, out_dir, "training", plt), caption


def _names(files):
    return ", ".join(shown_path(path) for path, _ in files) or "no files"


IMPL_STYLE = {"eager": ("#8a8a8a", "s"), "compile": ("#d1741f", "^"), "ganforge": (OWN_COLOUR, "o")}


def kernel_panels(results_files):
    """{(op, pass): {(impl, dtype, file index): [(numel, gbps)]}} and the copy bandwidth of each file."""
    panels, copies = {}, []
    for index, (path, results) in enumerate(results_files):
        rows = timed_rows(results, "kernels")
        if not rows:
            continue
        copies.append((index, (results.get("ceilings") or {}).get("copy_gbps"), results))
        for row in rows:
            line = panels.setdefault((row["op"], row["pass"]), {}).setdefault((row["impl"], row["dtype"], index), [])
            line.append((row["numel"], row["gbps"]))
    return panels, copies


def _kernel_panel(ax, key, lines, copies, several_files):
    for (impl, dtype, index), points in sorted(lines.items()):
        colour, marker = IMPL_STYLE.get(impl, ("#5a9e4b", "D"))
        points = sorted(points)
        label = f"{impl} ({dtype})" + (f", file {index + 1}" if several_files else "")
        ax.plot([n for n, _ in points], [g for _, g in points], marker=marker, color=colour, label=label,
                linestyle="-" if index == copies[0][0] else "--")
    for number, (index, copy_gbps, _) in enumerate(copies):
        if copy_gbps:
            ax.axhline(copy_gbps, color="black", linestyle=":" if number else "--", linewidth=1,
                       label=f"copy bandwidth {copy_gbps:,.1f} GB/s" + (f", file {index + 1}" if several_files else ""))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("tensor size (elements, log scale)")
    ax.set_ylabel("GB/s read + written (log)")
    ax.set_title(f"{key[0]} · {key[1]}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)


def kernels_figure(results_files, out_dir):
    """GB/s of every kernel row against its size, per op and pass, beside the copy bandwidth of the same run."""
    panels, copies = kernel_panels(results_files)
    if not panels:
        return None, "no timed kernel rows in " + _names(results_files)
    plt = _pyplot()
    fig, axes = _grid(plt, len(panels), 13, 3.3, columns=3)
    several = len(copies) > 1
    for ax, (key, lines) in zip(axes, panels.items()):
        _kernel_panel(ax, key, lines, copies, several)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:  # one legend for all panels: every entry once
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=9, frameon=False)
    fig.suptitle("Kernel bandwidth against tensor size (median time; the dashed line is the copy bandwidth measured "
                 "in the same run)\n" + where_measured([results for _, _, results in copies]), fontsize=11)
    rows = -(-len(panels) // 3)
    fig.tight_layout(rect=(0, 0.08 / rows + 0.01, 1, 1))
    used = [results_files[index][0] for index, _, _ in copies]
    caption = ("GB/s (bytes read + written over the median time) of each kernel per op and pass, one line per "
               "implementation (eager PyTorch, torch.compile, the ganforge Triton kernel), against the copy "
               "bandwidth measured in the same run. From " + ", ".join(shown_path(p) for p in used)
               + (" (files numbered in this order)." if several else "."))
    return _save(fig, out_dir, "kernels", plt), caption


SERIES_KEY = ("case_name", "model", "objective", "column_name", "batch", "shape", "dtype", "machine", "unit")
MAX_SERIES = 6  # panels of the history figure when --series names none


def series_label(key):
    case, _model, objective, column, batch, shape, dtype, machine, _unit = key
    if case.startswith("kernel/"):
        return f"{case[len('kernel/'):]} · {column} · {shape or batch} {dtype}"
    return f"{case} · {objective} · {column} · batch {batch}"


def history_series(rows, wanted=()):
    """{series key: [rows, oldest first]}; ``wanted`` substrings pick series by label, else those measured at the
    most commits (at least two), at most MAX_SERIES."""
    series = {}
    for row in rows:
        series.setdefault(tuple(row[c] for c in SERIES_KEY), []).append(row)
    if wanted:
        picked = [k for k in series if any(w in f"{series_label(k)} · {k[7]}" for w in wanted)]
        return {k: series[k] for k in picked[:MAX_PANELS]}
    spread = {k: len({r["git_commit"] for r in v}) for k, v in series.items()}
    ranked = sorted((k for k in series if spread[k] >= 2), key=lambda k: (-spread[k], series_label(k)))
    return {k: series[k] for k in ranked[:MAX_SERIES]}


def commit_order(series):
    """The commits of the selected rows ordered by the date each was first measured."""
    first = {}
    for rows in series.values():
        for row in rows:
            commit = row["git_commit"] or "unknown"
            first[commit] = min(first.get(commit, row["date"]), row["date"])
    return sorted(first, key=lambda c: (first[c], c))


def short_commit(commit):
    """Seven hex digits, keeping a "-dirty" mark: a dirty tree and its clean commit are two points."""
    return commit[:7] + ("-dirty" if commit.endswith("-dirty") else "")


def _history_panel(ax, key, rows, commits):
    """One row key over commits: every measurement as a dot, the median of each commit's measurements as the line,
    and the band from the lowest p20 to the highest p80 of its repeats over those measurements."""
    import statistics

    by_commit = {}
    for row in rows:
        by_commit.setdefault(row["git_commit"] or "unknown", []).append(row)
    xs = sorted(commits.index(c) for c in by_commit)
    measured = [by_commit[commits[x]] for x in xs]
    if any(len(m) > 1 for m in measured):
        ax.scatter([x for x, m in zip(xs, measured) for _ in m], [r["value"] for m in measured for r in m], s=12,
                   color=OWN_COLOUR, alpha=0.45, label="each measurement")
    ax.plot(xs, [statistics.median(r["value"] for r in m) for m in measured], marker="o", color=OWN_COLOUR,
            label="median of the commit's measurements")
    banded = [(x, min(r["p20"] for r in m), max(r["p80"] for r in m)) for x, m in zip(xs, measured)
              if all(r["p20"] is not None and r["p80"] is not None for r in m)]
    if banded:
        ax.fill_between([b[0] for b in banded], [b[1] for b in banded], [b[2] for b in banded], color=OWN_COLOUR,
                        alpha=0.2, label="p20-p80 of the repeats")
    ax.set_xticks(range(len(commits)), [short_commit(c) for c in commits], rotation=45, ha="right", fontsize=8)
    ax.set_xlim(-0.5, len(commits) - 0.5)
    ax.set_xlabel("commit (in order of measurement date)")
    unit = key[8]
    ax.set_ylabel(unit + (" (lower is better)" if unit in LOWER_IS_BETTER else " (higher is better)"))
    ax.set_title(f"{series_label(key)}\n{key[7]}", fontsize=9)
    ax.grid(True, alpha=0.3)


def history_figure(db_path, out_dir, wanted=(), source=""):
    """Each selected row's figure over commits with its p20-p80 band, one panel per row key and machine."""
    from .history import query

    series = history_series(query(db_path), wanted)
    if not series:
        picked = f"rows matching {', '.join(wanted)}" if wanted else "rows measured at two commits or more"
        return None, f"no {picked} in the history {source or shown_path(db_path)}"
    plt = _pyplot()
    commits = commit_order(series)
    fig, axes = _grid(plt, len(series), 13, 3.6)
    for ax, (key, rows) in zip(axes, series.items()):
        _history_panel(ax, key, rows, commits)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False)
    dates = sorted(r["date"][:10] for rows in series.values() for r in rows)
    span = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    fig.suptitle(f"Bench figures over commits (measured {span}): the median of each commit's measurements, "
                 f"band p20-p80 of their repeats\nhistory: {source or shown_path(db_path)}", fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    caption = (f"{len(series)} figure(s) of the history over {len(commits)} commits, ordered by the date each commit "
               "was first measured (x labels: short commit); each panel is one row key on one machine. From the "
               f"history {source or shown_path(db_path)}.")
    return _save(fig, out_dir, "history", plt), caption


RECIPE_COLOURS = ("#1f5fa8", "#2e9e6a", "#7b4fb0", "#c23b6e", "#3aa0c8", "#8c6d1f", "#4d4d9e", "#1b7f7f")
PEER_STYLES = (("#d1741f", "s"), ("#8a8a8a", "^"), ("#a05a2c", "v"), ("#555555", "D"))


def time_to_fid_figure(quality_files, out_dir):
    """FID against seconds of training for every recipe (solid) and peer (dashed) of the quality files."""
    if not quality_files:
        return None, "no time-to-quality files (schema ganforge-quality/1) named or committed"
    paths = [path for path, _ in quality_files]
    curves, floor, headers = load_quality(paths)
    if not curves:
        return None, "no curve with an FID in " + _names(quality_files)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(13, 5.6))
    recipes = peers = 0
    for curve in curves:
        if curve["kind"] == "peer":
            colour, marker = PEER_STYLES[peers % len(PEER_STYLES)]
            peers += 1
            style = dict(color=colour, marker=marker, linestyle="--", linewidth=1.4)
        else:
            style = dict(color=RECIPE_COLOURS[recipes % len(RECIPE_COLOURS)], marker="o", linewidth=2)
            recipes += 1
        kind = "peer" if curve["kind"] == "peer" else "ganforge"
        ax.plot(curve["seconds"], curve["fid"], label=f"{curve['name']} ({kind})", **style)
    if floor is not None:
        ax.axhline(floor, color="black", linestyle=":", linewidth=1, label=f"real-data floor ({floor:.2f})")
    ax.set_yscale("log")
    ax.set_xscale("log")
    marks = sorted({round(s) for curve in curves for s in curve["seconds"]})
    ax.set_xticks(marks, [f"{m:,}" for m in marks])
    ax.xaxis.set_minor_formatter("")
    ax.yaxis.set_major_formatter("{x:,.0f}")
    ax.set_xlabel("seconds of training (log scale; evaluation time not counted)")
    samples = headers[0].get("fid_samples")
    ax.set_ylabel(f"FID ({samples:,} samples, log scale; lower is better)" if samples else "FID (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    ax.set_title("Time to quality: FID against training time, ganforge recipes beside the peers\n"
                 + where_measured(headers), fontsize=11)
    fig.tight_layout()
    caption = (f"FID against seconds of training for {recipes} ganforge recipe(s) (solid) and {peers} peer "
               "model(s) (dashed), each scored at its time marks by the project's FID, with the real-data floor "
               "dotted. From " + _names(quality_files) + ".")
    return _save(fig, out_dir, "time_to_fid", plt), caption


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ganforge bench report</title>
<style>
body {{ font-family: sans-serif; max-width: 1360px; margin: 1.5em auto; padding: 0 1em; color: #222; }}
figure {{ margin: 2em 0; }} img {{ max-width: 100%; border: 1px solid #ddd; }}
figcaption {{ font-size: 0.95em; color: #444; margin-top: 0.4em; }} .left-out {{ color: #8a4b00; }}
code {{ background: #f3f3f3; padding: 0 0.2em; }}
</style></head><body>
<h1>ganforge bench report</h1>
<p>Generated {date} by <code>{command}</code>.</p>
{left_out}
{figures}
</body></html>
"""


def write_page(out_dir, drawn, left_out, command):
    """index.html: each drawn figure as an <img> with its caption, then one line per figure left out."""
    import datetime
    from html import escape

    figures = "\n".join(f'<figure id="{escape(name)}"><h2>{escape(title)}</h2>'
                        f'<img src="{escape(path.name)}" alt="{escape(title)}">'
                        f"<figcaption>{escape(caption)}</figcaption></figure>"
                        for name, title, path, caption in drawn)
    skipped = "".join(f'<li class="left-out">{escape(title)}: left out, {escape(reason)}</li>'
                      for title, reason in left_out)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = PAGE.format(date=stamp, command=escape(command), figures=figures,
                       left_out=f"<ul>{skipped}</ul>" if skipped else "")
    path = Path(out_dir) / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def _history_source(args, scratch):
    """(database path, how the caption names it), or (None, why there is none)."""
    from .history import rebuild

    if args.history == "off":
        return None, "--history off"
    if args.history:
        return args.history, shown_path(args.history)
    db = Path(scratch) / "history.sqlite"
    rebuild(db, args.records)
    return db, f"rebuilt from {shown_path(args.records)}/ in a temporary file"


def build_report(args):
    """Draw every figure that has data into args.out and write the page; returns (drawn, left out)."""
    import tempfile

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = [(Path(p), load_results(p)) for p in args.results] if args.results else default_results(args.records)
    quality = [(Path(p), None) for p in args.quality] if args.quality else default_quality(args.records)
    drawn, left_out = [], []
    with tempfile.TemporaryDirectory() as scratch:
        db, source = _history_source(args, scratch)
        jobs = [("training", "Training throughput per column", lambda: training_figure(results, out_dir)),
                ("kernels", "Kernel bandwidth against size", lambda: kernels_figure(results, out_dir)),
                ("history", "Figures over commits",
                 lambda: history_figure(db, out_dir, args.series or (), source) if db else (None, source)),
                ("time_to_fid", "Time to FID, recipes beside the peers", lambda: time_to_fid_figure(quality, out_dir))]
        for name, title, draw in jobs:
            if name not in args.figures:
                continue
            stale = out_dir / f"{name}.png"
            if stale.exists():
                stale.unlink()  # a figure left from an earlier report must not pass for this one
            path, text = draw()
            if path is None:
                left_out.append((title, text))
            else:
                drawn.append((name, title, path, text))
    return drawn, left_out


FIGURES = ("training", "kernels", "history", "time_to_fid")


def _figure_names(text):
    import argparse

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in FIGURES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected names among {','.join(FIGURES)}, got {text!r}")
    return names


def add_arguments(parser):
    parser.add_argument("results", nargs="*", help="results JSON files (default, with --out: the newest committed "
                                                   "records under bench/results/ with training and kernel rows)")
    parser.add_argument("--section", action="append", choices=("ceilings", "train", "kernels"),
                        help="without --out: only these markdown sections (repeatable; default: all)")
    parser.add_argument("--quality", nargs="+", action="extend", default=[],
                        help="time-to-quality JSON files (default: the newest committed record holding peers)")
    parser.add_argument("--series", action="append", default=[],
                        help="history figure: rows whose label contains TEXT, e.g. 'dcgan-28 · r1' "
                             f"(repeatable; default: up to {MAX_SERIES} rows measured at the most commits)")
    parser.add_argument("--records", default=str(RECORDS), help="folder of committed records read by default")
    parser.add_argument("--figures", type=_figure_names, default=FIGURES,
                        help=f"comma-separated subset of {','.join(FIGURES)} (default: all)")
    parser.epilog = ("Without --out: print the markdown tables of one results file. With --out DIR: write "
                     "DIR/index.html and the PNG figures (--history DB reads that database; by default a history "
                     "is rebuilt from --records in a temporary file).")


def command_line(args):
    """The command as the page names it, rebuilt from the parsed options (shell-quoted)."""
    import shlex

    words = ["ganforge", "bench", "report", *args.results, "--out", args.out]
    words += ["--history", args.history] if args.history else []
    words += ["--quality", *args.quality] if args.quality else []
    for text in args.series:
        words += ["--series", text]
    words += ["--records", args.records] if Path(args.records).resolve() != RECORDS else []
    words += ["--figures", ",".join(args.figures)] if tuple(args.figures) != FIGURES else []
    return " ".join(shlex.quote(str(w)) for w in words)


def run(args):
    if not args.out:
        if len(args.results) != 1:
            print("ganforge bench report: error: name one results file, or give --out DIR for the figures")
            return 2
        try:
            results = load_results(args.results[0])
        except ResultsError as exc:
            print(f"bench.report: error: {exc}", file=sys.stderr)
            return 2
        print(report_markdown(results, tuple(args.section or ("ceilings", "train", "kernels"))), end="")
        return 0
    try:
        drawn, left_out = build_report(args)
    except (ResultsError, OSError, ValueError) as exc:  # a named file that is missing or not a results file
        print(f"ganforge bench report: error: {exc}", file=sys.stderr)
        return 2
    page = write_page(args.out, drawn, left_out, command_line(args))
    for name, _, path, _ in drawn:
        print(f"wrote {path}")
    for title, reason in left_out:
        print(f"left out {title}: {reason}")
    print(f"wrote {page}")
    return 0


def main(argv):
    """`ganforge bench report ...` with ``argv`` after the case name, through the bench harness."""
    from .harness import main as harness_main

    return harness_main(["report", *argv])
