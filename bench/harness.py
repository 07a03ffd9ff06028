"""One harness for every `ganforge bench NAME`: the list of cases, the options they share, and how a run ends.

A case is a thin module of this package with two functions:

    add_arguments(parser)   the case's own flags (the shared ones are already on the parser)
    run(args) -> int        the measurement; args carries the shared options below and args.case (its name)

The shared options are parsed here, once, with the same meaning everywhere:

    --device cpu|cuda   where to measure (default: the case's own; most use CUDA when there is one)
    --out PATH          where the results go (default: the case's own, under runs/bench/)
    --repeats N         timed blocks or repeated runs per figure (default: the case's own)
    --quick             a small sweep with few repeats (CI-sized)
    --history DB|off    the SQLite history the figures are appended to (default: bench.history.default_path())

Modules are imported only when their case runs, so `ganforge bench --help` does not import torch.
"""
import argparse
import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    name: str     # ganforge bench NAME
    module: str   # the module of ganforge.bench that holds add_arguments() and run()
    summary: str  # one line for `ganforge bench --help`


CASES = (
    Case("kernels", "suite", "fused kernels' GB/s per op, size and dtype, beside the measured copy bandwidth"),
    Case("train", "suite", "training images/s per model and objective: eager, torch.compile and ganforge"),
    Case("all", "suite", "ceilings, kernels and training in one results file"),
    Case("quality", "quality", "time to FID of the shipped recipes beside the peers' reference models"),
    Case("penalty-cost", "penalty_cost", "RpGAN + R1 + R2's D step: explicit input gradient vs double backward"),
    Case("scaling", "scaling", "images/s on N torchrun ranks against N x one rank"),
    Case("grad-sync", "grad_sync", "gradient averaging across torchrun ranks: one flat all-reduce against DDP"),
    Case("metrics-cost", "metrics_cost", "seconds per FID / KID / precision-recall evaluation"),
    Case("peak-memory", "peak_memory", "peak resident memory of any command"),
    Case("gpu-check", "gpu_check", "the prepared GPU check: benchmarks, GPU tests, time to quality"),
    Case("counts", "counts", "operators, allocations and host reads per step kind (the CI gate)"),
    Case("noise", "noise", "each row's spread within a run and between identical runs on this machine"),
    Case("compare", "compare", "two results files side by side; exit 1 on a regression beyond the noise"),
    Case("bisect", "bisect", "the first commit where a figure or a count got worse"),
    Case("history", "history", "figures over commits from the SQLite history; `history rebuild DIR` loads records"),
    Case("report", "report", "PNG figures and an HTML page from results files and the history"),
    Case("records", "records", "write (or --check) docs/results.md, the index of bench/results/"),
)
BY_NAME = {case.name: case for case in CASES}


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_shared_options(parser):
    """The options every case takes, with one meaning each (see the module docstring)."""
    shared = parser.add_argument_group("shared by every bench case")
    shared.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: the case's own")
    shared.add_argument("--out", default=None, help="results path (default: the case's own, under runs/bench/)")
    shared.add_argument("--repeats", type=_positive_int, default=None,
                        help="timed blocks or repeated runs per figure (default: the case's own)")
    shared.add_argument("--quick", action="store_true", help="a small sweep with few repeats (CI-sized)")
    shared.add_argument("--history", default=None,
                        help="SQLite history the figures are appended to, or 'off' (default: $GANFORGE_HISTORY, "
                             "else ~/.cache/ganforge/bench-history.sqlite)")


def case_parser(case):
    parser = argparse.ArgumentParser(prog=f"ganforge bench {case.name}", description=case.summary)
    add_shared_options(parser)
    module = importlib.import_module(f"{__package__}.{case.module}")
    module.add_arguments(parser)
    return parser, module


def usage():
    width = max(len(case.name) for case in CASES)
    lines = ["usage: ganforge bench NAME [options]   (ganforge bench NAME --help for each)", "", "cases:"]
    lines += [f"  {case.name:<{width}}  {case.summary}" for case in CASES]
    return "\n".join(lines)


def main(argv):
    """`ganforge bench NAME ...`: parse the shared and the case's options once and run the case."""
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    case = BY_NAME.get(argv[0])
    if case is None:
        raise ValueError(f"unknown bench case {argv[0]!r}; one of {', '.join(BY_NAME)}")
    parser, module = case_parser(case)
    args = parser.parse_args(argv[1:])
    args.case = case.name
    return module.run(args)


def record_history(args, results):
    """Append a results dict's figures to the history named by --history (nothing when it is 'off')."""
    if getattr(args, "history", None) == "off":
        return
    from .history import record_quietly

    record_quietly(results, args.history)


def finish(args, results, default_out, markdown_table):
    """How a measuring case ends: its results JSON written whole to --out (or ``default_out``), its figures
    appended to the history, its table printed and the path named."""
    from .results import write_and_report

    out = args.out or default_out
    write_and_report(results, out, markdown_table)
    record_history(args, results)
    return out
