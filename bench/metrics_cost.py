"""What each evaluation metric costs: seconds for 2,000 and 10,000 generated samples on the embedded digits.

    ganforge bench metrics-cost [--samples 2000,10000] [--device cpu] [--out FILE.json]

The samples are real train digits, tiled to the size asked for with a little noise (the cost of a metric does not
depend on what the images show); the reference sets are those of `ganforge train`'s final evaluation on mnist5k:
the 500 held-out digits (FID, KID, precision/recall, density/coverage, intra-FID) and the 4,500 train digits
(MiFID). The backbone pass over the samples is timed once, as every metric shares it; each metric is then timed on
the features alone, best of three calls.
"""
import time

import torch

from ..engine.data import load_dataset
from ..engine.metrics import scores
from ..engine.metrics.fid import FIDScorer
from ..engine.provenance import provenance
from .results import device_name

SCHEMA = "ganforge-metrics-cost/1"


def best_of(fn, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(sample_counts=(2000, 10000), device="cpu"):
    held_out, train = load_dataset("mnist5k", split="test"), load_dataset("mnist5k", split="train")
    scorer = FIDScorer(device=device)
    real, pool = scorer.features(held_out.images), scorer.features(train.images)
    rows = []
    for n in sample_counts:
        gen = torch.Generator().manual_seed(n)
        index = torch.arange(n) % len(train.images)
        images = (train.images[index] + 0.05 * torch.randn(train.images[index].shape, generator=gen)).clamp(-1, 1)
        labels = train.labels[index]
        row = {"samples": n, "backbone_seconds": best_of(lambda: scorer.features(images), repeats=1)}
        fake = scorer.features(images)
        timed = {
            "fid": lambda: scores.score_features(("fid",), real, fake),
            "kid": lambda: scores.score_features(("kid",), real, fake),
            "is": lambda: scores.score_features(("is",), real, fake),
            "pr": lambda: scores.score_features(("pr",), real, fake),
            "dc": lambda: scores.score_features(("dc",), real, fake),
            "mifid": lambda: scores.score_features(("mifid",), real, fake, train=pool),
            "intra-fid": lambda: scores.score_features(("intra-fid",), real, fake, real_labels=held_out.labels,
                                                       fake_labels=labels, num_classes=10),
        }
        row["metric_seconds"] = {name: best_of(fn) for name, fn in timed.items()}
        row["all_metrics_seconds"] = sum(row["metric_seconds"].values())
        rows.append(row)
    return {"schema": SCHEMA, "device": device_name(device), **provenance(), "threads": torch.get_num_threads(),
            "reference_sizes": {"held_out": len(held_out.images), "train": len(train.images)}, "rows": rows}


def markdown_table(results):
    names = list(results["rows"][0]["metric_seconds"])
    lines = ["| samples | backbone pass | " + " | ".join(names) + " | all metrics |",
             "|---:|---:|" + "---:|" * (len(names) + 1)]
    for row in results["rows"]:
        lines.append(f"| {row['samples']:,} | {row['backbone_seconds']:.3f} | "
                     + " | ".join(f"{row['metric_seconds'][n]:.3f}" for n in names)
                     + f" | {row['all_metrics_seconds']:.3f} |")
    return "\n".join(lines) + "\n"


def add_arguments(parser):
    parser.add_argument("--samples", default="2000,10000", help="comma-separated sample counts")


def run(args):
    """Defaults: --device cpu, --out runs/bench/metrics-cost.json."""
    from .harness import finish

    counts = tuple(int(v) for v in args.samples.split(",") if v.strip())
    if not counts or min(counts) < 10:
        raise ValueError("--samples must be counts >= 10")
    results = measure(counts, args.device or "cpu")
    finish(args, results, "runs/bench/metrics-cost.json", markdown_table)
    return 0
