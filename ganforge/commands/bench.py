"""`ganforge bench NAME ...` and `ganforge profile ...`, called by the command dispatcher (ganforge.cli).

    ganforge bench NAME [--device cpu|cuda] [--out PATH] [--repeats N] [--quick] [--history DB|off] [case flags]
        (`ganforge bench` lists the cases; bench/harness.py holds them and the options they share)
    ganforge profile [train flags] [--out DIR] [--steps-to-profile N] [--synthetic-data]
    ganforge profile diff A/kernels.json B/kernels.json [--threshold 10%]
"""
import argparse
from pathlib import Path

from ..bench.harness import main as bench_main


def bench_command(argv):
    """Entry point of `ganforge bench NAME ...` (bench/harness.py lists the cases); returns the exit code."""
    return bench_main(argv)


def _pair_parser(prog, description, files, threshold_help):
    """The parser of a command comparing two ``files`` (reference first) under a relative --threshold."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("base", help=f"{files} of the reference")
    parser.add_argument("new", help=f"{files} under test")
    parser.add_argument("--threshold", default="10%", help=f"{threshold_help} (default 10%%)")
    return parser


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
