"""`ganforge bench ...` and `ganforge profile ...`, called by the command dispatcher (ganforge.cli).

    ganforge bench kernels|train|all [--quick] [--out FILE.json] [--device cuda|cpu]
    ganforge bench compare BASE.json NEW.json [--threshold 10%]
    ganforge bench scaling [--nproc 1,2] [--device cpu|cuda] [-- train flags]   (torchrun data-parallel scaling)
    ganforge bench penalty-cost [--model dcgan-28] [--batch-size 64]   (RpGAN + R1 + R2: explicit vs double backward)
    ganforge bench records [--check]   (write docs/results.md from bench/results/*/README.md, or check it)
    ganforge bench counts [--device cpu] [--out FILE.json]   (operators, allocations and host reads per step)
    ganforge bench history [rebuild DIR] [--history DB] [--case C] [--model M] [--column COL] [--commit SHA]
    ganforge profile [train flags] [--out DIR] [--steps-to-profile N] [--synthetic-data]
    ganforge profile diff A/kernels.json B/kernels.json [--threshold 10%]
"""
import argparse
import datetime
from pathlib import Path

from ..bench.suite import WHAT


def _csv(kind):
    def parse(text):
        return tuple(kind(v) for v in text.split(",") if v.strip())
    return parse


def _bench_parser():
    parser = argparse.ArgumentParser(
        prog="ganforge bench",
        description="Measure the device ceilings, kernel bandwidth and training throughput; compare two runs.",
        epilog="ganforge bench compare BASE.json NEW.json [--threshold 10%]: flag regressions between runs. "
               "ganforge bench scaling [--nproc 1,2]: images/s on N torchrun ranks against N x one rank. "
               "ganforge bench penalty-cost: RpGAN + R1 + R2's D step, explicit gradient vs double backward. "
               "ganforge bench records [--check]: write (or check) docs/results.md, the index of bench/results/. "
               "ganforge bench counts [--out FILE.json]: operators, allocations and host reads of one step per kind. "
               "ganforge bench history [rebuild DIR]: the figures of results files over commits (SQLite).")
    parser.add_argument("what", choices=WHAT, help="kernels, train, or all of them")
    parser.add_argument("--quick", action="store_true", help="small sweep, few repeats (CI-sized)")
    parser.add_argument("--out", help="results JSON (default: runs/bench/<what>-<device>-<time>.json)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    parser.add_argument("--models", type=_csv(str),
                        help="train: comma-separated subset of mlp-28,dcgan-28,dcgan-32,dcgan-64")
    parser.add_argument("--batch-sizes", type=_csv(int), help="train: comma-separated batch sizes")
    parser.add_argument("--columns", type=_csv(str),
                        help="train: subset of eager-fp32,eager-bf16,compile,compile-graphs,ganforge,graphs-ref,"
                        "eager-explicit,compile-explicit,steps,loop (bench/README.md says what each runs)")
    parser.add_argument("--penalties", type=_csv(str),
                        help="train: objectives, a subset of none,wgan-gp,r1,default (default: the train recipe)")
    parser.add_argument("--iters", type=int, help="train: iterations per timed block")
    parser.add_argument("--repeats", type=int, help="train: timed blocks (median and spread over these)")
    return parser


def _pair_parser(prog, description, files, threshold_help):
    """The parser of a command comparing two ``files`` (reference first) under a relative --threshold."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("base", help=f"{files} of the reference")
    parser.add_argument("new", help=f"{files} under test")
    parser.add_argument("--threshold", default="10%", help=f"{threshold_help} (default 10%%)")
    return parser


def _compare_parser():
    parser = _pair_parser("ganforge bench compare", "Compare two results files; exit 1 when a figure regressed.",
                          "results JSON", "slowdown that counts as a regression")
    parser.add_argument("--only-changes", action="store_true", help="hide unchanged figures")
    return parser


def _compare(argv):
    from ..bench.compare import compare_files

    args = _compare_parser().parse_args(argv)
    return compare_files(args.base, args.new, args.threshold, args.only_changes)


def bench_command(argv):
    """Entry point of `ganforge bench`; returns the exit code."""
    argv = list(argv)
    if argv[:1] == ["compare"]:
        return _compare(argv[1:])
    if argv[:1] == ["scaling"]:
        from ..bench.scaling import main

        return main(argv[1:])
    if argv[:1] == ["penalty-cost"]:
        from ..bench.penalty_cost import main

        return main(argv[1:])
    if argv[:1] == ["records"]:
        from ..bench.records import main

        return main(argv[1:])
    if argv[:1] == ["counts"]:
        from ..bench.counts import main

        return main(argv[1:])
    if argv[:1] == ["history"]:
        from ..bench.history import main

        return main(argv[1:])

    args = _bench_parser().parse_args(argv)
    from ..bench.report import report_markdown
    from ..bench.results import save_results, validate_results
    from ..bench.suite import resolve_device, run_suite

    device = resolve_device(args.device)
    results = run_suite(args.what, device, args.quick, models=args.models, batch_sizes=args.batch_sizes,
                        columns=args.columns, objectives=args.penalties, iters=args.iters, repeats=args.repeats)
    validate_results(results)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/bench/{args.what}-{device.type}-{stamp}.json")
    save_results(results, out)
    from ..bench.history import record_quietly

    record_quietly(results)  # the figures over commits; a failure warns and never fails the run
    print()
    print(report_markdown(results), end="")
    print(f"\nresults written to {out}")
    return 0


def _profile_parser():
    from .training import add_train_args

    parser = argparse.ArgumentParser(
        prog="ganforge profile",
        description="Profile a few training iterations (graphs off): chrome trace + per-kernel table in --out.",
        epilog="ganforge profile diff A/kernels.json B/kernels.json: which kernels got slower.")
    add_train_args(parser)
    parser.set_defaults(out="runs/profile")
    parser.add_argument("--steps-to-profile", type=int, default=5, help="iterations inside the profiler")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations before profiling")
    parser.add_argument("--synthetic-data", action="store_true",
                        help="random images (1x28x28, or --channels x --image-size) instead of --dataset")
    return parser


def _diff_parser():
    parser = _pair_parser("ganforge profile diff", "Compare two kernels.json files written by `ganforge profile`.",
                          "kernels.json", "relative increase that counts as slower")
    parser.add_argument("--min-ms", type=float, default=0.001,
                        help="ignore changes below this many ms per iteration (default 0.001)")
    parser.add_argument("--fail-on-slower", action="store_true", help="exit 1 when any kernel got slower")
    return parser


def profile_command(argv):
    """Entry point of `ganforge profile`; returns the exit code."""
    argv = list(argv)
    from ..bench.compare import parse_threshold
    from ..bench.profiling import diff_profiles, format_diff, load_profile, profile_training, synthetic_dataset_for

    if argv and argv[0] == "diff":
        args = _diff_parser().parse_args(argv[1:])
        a, b = load_profile(args.base), load_profile(args.new)
        entries = diff_profiles(a, b, parse_threshold(args.threshold), args.min_ms)
        print(format_diff(entries, a, b))
        return 1 if args.fail_on_slower and any(e["status"] == "slower" for e in entries) else 0

    from .training import config_from_args, parse_train_args

    args = parse_train_args(_profile_parser(), argv)  # --config FILE becomes the defaults the flags override
    if args.steps_to_profile < 1 or args.warmup < 0:
        raise ValueError("--steps-to-profile must be >= 1 and --warmup >= 0")
    cfg = config_from_args(args)
    dataset = synthetic_dataset_for(cfg) if args.synthetic_data else None
    _, text = profile_training(cfg, args.out, args.steps_to_profile, args.warmup, dataset)
    print(text)
    print(f"\nwrote {Path(args.out) / 'trace.json'}, kernels.json and kernels.txt")
    return 0
