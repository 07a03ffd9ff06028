"""`ganforge bench noise`: how much each tracked figure moves on this machine when nothing changes.

    ganforge bench noise [--runs 3] [--case train|kernels] [--case-args "..."] [--device cpu|cuda]
                         [--repeats N] [--quick] [--out runs/bench/noise-<device>-<time>.json]

Runs the same bench case --runs times, each in a fresh process (so one run's warm caches, allocator state or
compiled graphs never help the next), and for every tracked row (bench.compare.tracked_figures) records:

    within   the row's own p20-p80 spread over its timed blocks ("spread" in the results), median over the runs
    between  (max - min) / median of the runs' figures, and their coefficient of variation (stdev / mean)
    noise    max(within, between): the relative change this machine produces on identical code

The noise file (schema ganforge-noise/1) feeds `ganforge bench compare --noise`, which then flags a row only
beyond max(threshold, 3 x its noise). Every run's results file is kept in a folder beside --out.
"""
import datetime
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

from ..engine.io import atomic_write_json
from .compare import NOISE_FACTOR, NOISE_SCHEMA, figure_of, key_fields, label, tracked_figures
from .report import markdown_table
from .results import load_results

# What people compare: two training models, the eager baseline beside ganforge's own columns.
DEFAULT_CASE_ARGS = {"train": "--models mlp-28,dcgan-28 --columns eager-fp32,ganforge,steps", "kernels": ""}
# Runs the bench harness in a fresh interpreter, whichever way `ganforge bench` is wired at the moment.
HARNESS = "import sys; from ganforge.bench.harness import main; sys.exit(main(sys.argv[1:]))"


def _at_least_two(text):
    value = int(text)
    if value < 2:
        raise ValueError("--runs must be >= 2: one run has no between-run spread")
    return value


def add_arguments(parser):
    parser.add_argument("--runs", type=_at_least_two, default=3, help="identical runs, each in its own process")
    # dest differs from "case": the harness sets args.case to this command's own name
    parser.add_argument("--case", dest="measured_case", choices=tuple(DEFAULT_CASE_ARGS), default="train",
                        help="the bench case to repeat (default train)")
    parser.add_argument("--case-args", default=None,
                        help="the case's own flags, one string (default for train: "
                             f"{DEFAULT_CASE_ARGS['train']!r}; for kernels: none)")
    parser.add_argument("--from-results", nargs="+", default=None, metavar="RESULTS.json",
                        help="measure nothing: compute the noise of these results files of identical runs "
                             "(e.g. a subset of an earlier noise record's runs)")


def run_command(args, case_args, results_path):
    """The argv of one measured run: the case with its flags, the shared options passed on, no history."""
    command = [sys.executable, "-c", HARNESS, args.measured_case, *case_args, "--out", str(results_path),
               "--history", "off"]
    if args.device:
        command += ["--device", args.device]
    if args.repeats:
        command += ["--repeats", str(args.repeats)]
    if args.quick:
        command.append("--quick")
    return command


def measure(args, case_args, runs_dir, log=print):
    """Run the case --runs times in fresh processes; the results files' paths, in run order."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(1, args.runs + 1):
        path = runs_dir / f"run-{index}.json"
        command = run_command(args, case_args, path)
        log(f"noise: run {index}/{args.runs}: {shlex.join(command[3:])}")
        done = subprocess.run(command, capture_output=True, text=True)
        (runs_dir / f"run-{index}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"run {index} exited {done.returncode}; its output is in {runs_dir}/run-{index}.log:\n"
                               + (done.stdout + done.stderr)[-2000:])
        paths.append(path)
    return paths


def row_noise(values, spreads):
    """within, between, cv and noise of one row from its figure and spread in each run (None where missing)."""
    if any(v is None or v <= 0 for v in values):
        return {"within": None, "between": None, "cv": None, "noise": None}
    known_spreads = [s for s in spreads if s is not None]
    within = statistics.median(known_spreads) if known_spreads else 0.0
    between = (max(values) - min(values)) / statistics.median(values)
    cv = statistics.stdev(values) / statistics.fmean(values)
    return {"within": within, "between": between, "cv": cv, "noise": max(within, between)}


def noise_rows(all_results):
    """One row per tracked figure of the first run: its key, the figure in every run, within/between/noise."""
    figures = [tracked_figures(results) for results in all_results]
    rows = []
    for key in figures[0]:
        per_run = [run.get(key, (None, None, None)) for run in figures]
        values, spreads = [fig[0] for fig in per_run], [fig[1] for fig in per_run]
        row = {"key": list(key), "fields": key_fields(key), "label": label(key), "figure": figure_of(key),
               "runs": values, "spreads": spreads, **row_noise(values, spreads)}
        if row["noise"] is None:
            row["why"] = "a run has no figure for this row (skipped or failed)"
        rows.append(row)
    return rows


def _relative(path, folder):
    """``path`` as seen from ``folder`` (where the noise file lies), so a record stays movable."""
    return os.path.relpath(Path(path).resolve(), Path(folder).resolve())


def noise_record(args, case_args, paths, out):
    """The noise file: the machine and versions of the first run, how it was measured, the rows."""
    all_results = [load_results(path) for path in paths]
    first = all_results[0]
    return {"schema": NOISE_SCHEMA, "device": first["device"], "device_type": first["device_type"],
            "torch": first["torch"], "triton": first.get("triton"), "git_commit": first.get("git_commit"),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "runs": len(paths), "case": args.measured_case, "case_args": case_args,
            "run_command": first.get("command"),
            "repeats": args.repeats, "quick": args.quick, "noise_factor": NOISE_FACTOR,
            "results_files": [_relative(p, Path(out).parent) for p in paths],
            "rows": noise_rows(all_results)}


def noise_markdown(record):
    def pct(value):
        return "–" if value is None else f"{value:.1%}"

    def figures(values):
        spec = ".4f" if any(v is not None and v < 10 for v in values) else ",.0f"
        return " / ".join("–" if v is None else format(v, spec) for v in values)

    shown = [r for r in record["rows"] if any(v is not None for v in r["runs"])]
    rows = [[r["label"], r["figure"], figures(r["runs"]), pct(r["within"]), pct(r["between"]), pct(r["cv"]),
             pct(r["noise"]), pct(None if r["noise"] is None else NOISE_FACTOR * r["noise"])] for r in shown]
    headers = ["row", "figure", "runs", "within", "between", "cv", "noise", f"{NOISE_FACTOR}x noise"]
    head = (f"noise of {record['case']} on {record['device']}: {record['runs']} runs, commit "
            f"{(record.get('git_commit') or 'unknown')[:12]}, torch {record['torch']}\n\n")
    hidden = len(record["rows"]) - len(shown)
    tail = f"\n({hidden} rows without a figure in any run: skipped or failed on this device)\n" if hidden else ""
    return head + markdown_table(headers, rows, "llrrrrrr") + "\n" + tail


def default_out(device_type):
    if device_type is None:  # what the measured case picks by default: CUDA when there is one
        import torch

        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(f"runs/bench/noise-{device_type}-{stamp}.json")


def run(args):
    if args.case_args is not None:
        case_args = shlex.split(args.case_args)
    else:  # files given: what they ran is in their own "command"; nothing is assumed here
        case_args = None if args.from_results else shlex.split(DEFAULT_CASE_ARGS[args.measured_case])
    out = Path(args.out) if args.out else default_out(args.device)
    runs_dir = out.with_name(out.stem + "-runs")  # every run's results file, kept beside the noise file
    if args.from_results:
        if len(args.from_results) < 2:
            print("bench noise: error: --from-results needs two or more results files", file=sys.stderr)
            return 2
        paths, runs_dir = [Path(p) for p in args.from_results], "the files given"
    else:
        try:
            paths = measure(args, case_args, runs_dir)
        except RuntimeError as exc:
            print(f"bench noise: error: {exc}", file=sys.stderr)
            return 1
    record = noise_record(args, case_args, paths, out)
    atomic_write_json(out, record, indent=1)
    print(noise_markdown(record), end="")
    print(f"noise written to {out} (each run's results in {runs_dir})")
    return 0
