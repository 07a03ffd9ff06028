"""Why the EMA of a generator with BatchNorm scored worse than the generator: FID of G and of its EMA with three
choices of BatchNorm statistics, at points along one run of the default recipe of 2026-12-01 (engine.recipes'
mlp-r1: the textbook MLP with lazy R1, batch 64, fp32) with an EMA added.

    python bench/studies/ema_norm.py --out FILE.json [--iterations 8000] [--every 2000] [--ema 0.999]

The EMA's weights are an average over the last ~1/(1 - decay) steps; the live G's running statistics describe
the activations of the live weights. Each point scores, on the same 2,000 latents:
- g: the live G (eval mode, its own running statistics), what a run without EMA samples;
- ema_copied_statistics: the EMA with the live G's running statistics copied in (what the EMA did before);
- ema_batch_statistics: the EMA in train mode (each batch of 500 normalised by its own statistics);
- ema_own_statistics: the EMA with statistics recomputed over its own activations (what it does now,
  engine.train_state.TrainState.recompute_ema_norm_statistics).
"""
import argparse
import copy
import sys

import torch
from tqdm import tqdm

from ganforge.engine.config import TrainConfig
from ganforge.engine.data import load_dataset
from ganforge.engine.metrics.fid import FIDScorer
from ganforge.engine.provenance import provenance
from ganforge.engine.recipes import PRE_SPEEDRUN
from ganforge.engine.session import build_session, run_iteration
from ganforge.bench.results import device_name, write_and_report

SCHEMA = "ganforge-ema-norm/1"
VARIANTS = ("g", "ema_copied_statistics", "ema_batch_statistics", "ema_own_statistics")


def score_variants(state, scorer, z):
    """FID of each VARIANTS entry on latents ``z``."""
    def fid(G, train_mode):
        G.train(train_mode)
        with torch.no_grad():
            return scorer.score_fake(torch.cat([G(chunk).float() for chunk in z.split(500)]))

    copied = copy.deepcopy(state.G_ema)
    for ema_buffer, buffer in zip(copied.buffers(), state.G.buffers()):
        ema_buffer.copy_(buffer)
    own = state.sampling_generator()
    return {"g": fid(copy.deepcopy(state.G), False), "ema_copied_statistics": fid(copied, False),
            "ema_batch_statistics": fid(copy.deepcopy(state.G_ema), True), "ema_own_statistics": fid(own, False)}


def measure(iterations=8000, every=2000, ema=0.999, ema_rampup=0.05, seed=0, progress=True):
    cfg = TrainConfig(**{**PRE_SPEEDRUN, "progress": False, "fid_samples": 0, "iterations": iterations, "ema": ema,
                         "ema_rampup": ema_rampup, "seed": seed}).validate()
    session = build_session(cfg)
    scorer = FIDScorer("mnist", device=session.device)
    scorer.set_real(load_dataset("mnist5k", split="test").images)
    z = torch.randn(2000, cfg.z_dim, generator=torch.Generator().manual_seed(seed + 7)).to(session.device)
    points = []
    for i in tqdm(range(iterations), desc="ema-norm", disable=not progress):
        run_iteration(session, i)
        if (i + 1) % every == 0:
            points.append({"iteration": i + 1, **score_variants(session.state, scorer, z)})
    return {"schema": SCHEMA, "device": device_name(session.device), **provenance(), "threads": torch.get_num_threads(),
            "settings": {k: v for k, v in cfg.to_dict().items() if k not in ("out", "progress")}, "points": points}


def markdown_table(results):
    lines = ["| iteration | " + " | ".join(VARIANTS) + " |", "|---:|" + "---:|" * len(VARIANTS)]
    for point in results["points"]:
        lines.append(f"| {point['iteration']} | " + " | ".join(f"{point[v]:.1f}" for v in VARIANTS) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python bench/studies/ema_norm.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="results JSON to write")
    parser.add_argument("--iterations", type=int, default=8000)
    parser.add_argument("--every", type=int, default=2000)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--ema-rampup", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.iterations < 1 or not 1 <= args.every <= args.iterations:
        print("ema_norm: error: need --iterations >= 1 and 1 <= --every <= --iterations", file=sys.stderr)
        return 2
    results = measure(args.iterations, args.every, args.ema, args.ema_rampup, args.seed, not args.no_progress)
    write_and_report(results, args.out, markdown_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
