"""Markdown tables from a results file: the README's results section, and what `ganforge bench` prints.

    python -m ganforge.bench.report bench/results/FILE.json [--section train|kernels|ceilings]
"""
import argparse
import sys

from .results import ResultsError, load_results


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
        config = [r["name"], r.get("objective", r["penalty"]), r["batch_size"], r["column"], r.get("penalty_grad") or "–"]
        if r.get("images_per_sec") is None:
            rows.append(config + ["–"] * 8 + [_why(r)])
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
            _settings(r),
        ])
    headers = ["model", "objective", "batch", "column", "penalty grad", "images/s", "ms/D step", "ms/G step", "peak MB",
               "MFU %", "vs eager-fp32", "vs best other", "loop / steps", "note"]
    return markdown_table(headers, rows, "llrll" + "r" * 8 + "l")


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
                  "One iteration = one D step + one G step on synthetic data; MFU against the measured bf16 "
                  "matmul rate; ± is half the p20–p80 spread of the repeats.",
                  train_markdown(results)]
    if "kernels" in sections and results["kernels"]:
        parts += ["### Kernels", "Median time; GB/s counts bytes read + written, against the measured copy bandwidth.",
                  kernels_markdown(results)]
    return "\n\n".join(parts) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ganforge.bench.report",
                                     description="Print markdown results tables from a bench results file.")
    parser.add_argument("results", help="results JSON written by `ganforge bench`")
    parser.add_argument("--section", action="append", choices=("ceilings", "train", "kernels"),
                        help="only these sections (repeatable; default: all)")
    args = parser.parse_args(argv)
    try:
        results = load_results(args.results)
    except ResultsError as exc:
        print(f"bench.report: error: {exc}", file=sys.stderr)
        return 2
    print(report_markdown(results, tuple(args.section or ("ceilings", "train", "kernels"))), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
