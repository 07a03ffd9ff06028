"""Data-parallel scaling: images/s on N ranks against N times one rank, measured in the same run.

    ganforge bench scaling [--nproc 1,2] [--device cpu|cuda] [--batch-per-rank 64] [--iterations 300]
                           [--repeats 1] [--out FILE.json] [train flags after --, e.g. -- --model dcgan]

Each row is one real `ganforge train` run (weak scaling: every rank keeps --batch-per-rank, the global batch grows
with the ranks), started as a user starts it: the plain command, and `torchrun --standalone --nproc_per_node N`
for each N. images/s is the median over the run's log intervals after the first (warm-up, graph capture and
compilation fall in the first). With --repeats R every launch runs R times, interleaved (plain, 1 rank, N ranks,
plain, ...), and each row gives the median over its runs, so a machine whose speed drifts affects all rows alike.
Efficiency = images/s on N ranks / (N x images/s on one rank). On a CPU every process gets one thread
(OMP_NUM_THREADS=1), so N ranks use N cores.
"""
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from ..engine.provenance import provenance

SCHEMA = "ganforge-scaling/1"


def _parse_counts(text):
    counts = tuple(int(v) for v in text.split(",") if v.strip())
    if not counts or min(counts) < 1:
        raise ValueError(f"--nproc must list process counts >= 1, got {text!r}")
    return counts


def run_training(nproc, args, out, torchrun=True, env=None):
    """One training run; returns its row (images/s over log intervals, the summary's world fields)."""
    train = ["train", "--out", str(out), "--iterations", str(args.iterations), "--batch-size",
             str(args.batch_per_rank * nproc), "--fid-samples", "0", "--no-progress", "--device", args.device,
             "--log-every", str(args.log_every), "--ckpt-every", str(10**9), "--sample-every", str(10**9),
             *args.train_flags]
    if torchrun:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   "-m", "ganforge", *train]
    else:
        command = [sys.executable, "-m", "ganforge", *train]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    summary = json.loads((Path(out) / "summary.json").read_text())
    intervals = [json.loads(line)["images_per_sec"] for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    steady = intervals[1:] or intervals
    return {"launch": "torchrun" if torchrun else "plain", "nproc": nproc, "global_batch": summary["global_batch"],
            "batch_per_rank": summary["batch_per_rank"], "images_per_sec": statistics.median(steady),
            "images_per_sec_intervals": intervals, "graphs": summary["graphs"], "precision": summary["precision"],
            "device": summary["device"], "penalty_grad": summary["penalty_grad"]}


def measure(args, log=print):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    if args.device == "cpu":
        env["OMP_NUM_THREADS"] = "1"  # one core per process: N ranks on N cores
    launches = [("plain", 1)] + [("torchrun", n) for n in args.nproc]
    runs = {launch: [] for launch in launches}
    with tempfile.TemporaryDirectory(prefix="ganforge-scaling-") as tmp:
        for repeat in range(args.repeats):
            for kind, n in launches:
                out = Path(tmp) / f"{kind}-{n}-{repeat}"
                row = run_training(n, args, out, torchrun=kind == "torchrun", env=env)
                runs[(kind, n)].append(row)
                log(f"  {kind} x{n} (run {repeat + 1}/{args.repeats}): {row['images_per_sec']:,.0f} images/s")
    rows = []
    for launch in launches:
        row = dict(runs[launch][0])
        row["images_per_sec_runs"] = [r["images_per_sec"] for r in runs[launch]]
        row["images_per_sec"] = statistics.median(row["images_per_sec_runs"])
        row["images_per_sec_intervals"] = [r["images_per_sec_intervals"] for r in runs[launch]]
        rows.append(row)
    plain = rows[0]
    one_rank = next((r for r in rows if r["launch"] == "torchrun" and r["nproc"] == 1), None)
    for row in rows:
        if one_rank is not None and row["launch"] == "torchrun":
            row["scaling_efficiency"] = row["images_per_sec"] / (row["nproc"] * one_rank["images_per_sec"])
        row["vs_plain"] = row["images_per_sec"] / plain["images_per_sec"]
    return rows


def markdown(results):
    lines = ["| launch | ranks | global batch | images/s | vs plain | scaling efficiency |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        eff = f"{r['scaling_efficiency']:.0%}" if "scaling_efficiency" in r else "-"
        lines.append(f"| {r['launch']} | {r['nproc']} | {r['global_batch']} | {r['images_per_sec']:,.0f} | "
                     f"{r['vs_plain']:.2f}x | {eff} |")
    return "\n".join(lines) + "\n"


def add_arguments(parser):
    parser.add_argument("--nproc", type=_parse_counts, default=(1, 2), help="rank counts, comma-separated (1,2)")
    parser.add_argument("--batch-per-rank", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("train_flags", nargs="*", help="more `ganforge train` flags, after --")


def run(args):
    """Defaults: --device cpu, --repeats 1 (runs of each launch, interleaved; the median),
    --out runs/bench/scaling-<device>.json."""
    args.device = args.device or "cpu"
    args.repeats = args.repeats or 1
    if 1 not in args.nproc:
        args.nproc = (1, *args.nproc)  # efficiency is measured against one rank in the same run
    if args.iterations < 2 * args.log_every:
        raise ValueError("--iterations must cover at least two --log-every intervals (the first is warm-up)")
    print(f"bench scaling on {args.device}: ranks {', '.join(map(str, args.nproc))}, {args.batch_per_rank} images "
          "per rank per step")
    import torch

    device = (torch.cuda.get_device_name() if args.device == "cuda"
              else f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    results = {"schema": SCHEMA, "device": device, **provenance(), "date": started,
               "iterations": args.iterations, "batch_per_rank": args.batch_per_rank, "repeats": args.repeats,
               "train_flags": args.train_flags, "rows": measure(args)}
    from .harness import finish

    finish(args, results, f"runs/bench/scaling-{args.device}.json", markdown)
    return 0
