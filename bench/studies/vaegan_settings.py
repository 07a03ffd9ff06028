"""The VAE-GAN's reconstruction settings: which layer of D compares an image with its reconstruction, and how much
that comparison weighs (gamma) beside the GAN loss in the decoder's loss. Each setting trains `ganforge train
--model vaegan` (the command's own training path) for the same iterations and is judged on both of its jobs:

- generation: FID of prior samples against the held-out digits, and the smallest and largest class share;
- reconstruction: the held-out digits encoded (the mean code) and decoded, their pixel MSE and how often the
  digit classifier reads the reconstruction as the original's class.

    python bench/studies/vaegan_settings.py --out FILE.json [--iterations 3000] [--layers 1,2,3] [--gammas 0.1,1]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from ganforge.engine.checkpoint import load_generator
from ganforge.engine.config import TrainConfig
from ganforge.engine.data import load_dataset
from ganforge.engine.metrics.classifier import load_mnist_classifier
from ganforge.engine.provenance import provenance
from ganforge.engine.trainer import train
from ganforge.bench.results import device_name, write_and_report

SCHEMA = "ganforge-vaegan-settings/1"
HELD_OUT = 500  # test-split digits reconstructed per setting


@torch.no_grad()
def reconstruction_scores(ckpt_path, images, labels, classifier):
    """Pixel MSE and class kept of the held-out ``images`` through the checkpoint's encoder (its mean code) and
    decoder, the EMA's as the run samples."""
    G, _, _ = load_generator(ckpt_path)
    recon = G(G.encode(images)[0]).float()
    return {"pixel_mse": float((recon - images).pow(2).mean()),
            "class_kept": float((classifier(recon).argmax(dim=1) == labels).float().mean())}


def measure_setting(settings, folder, held_out, classifier):
    cfg = TrainConfig(**{"model": "vaegan", "progress": False, "fid_every": 0, "metrics": "fid",
                         "out": str(folder), **settings})
    started = time.perf_counter()
    summary = train(cfg)
    wall = time.perf_counter() - started
    images, labels = held_out
    return {"settings": settings, "fid": summary["fid"], "fid_real_floor": summary["fid_real_floor"],
            "min_class_share": summary.get("min_class_share"), "max_class_share": summary.get("max_class_share"),
            "train_seconds": summary["train_seconds"], "wall_seconds": wall,
            "reconstruction": reconstruction_scores(Path(folder) / "checkpoint.pt", images, labels, classifier)}


def measure(iterations, layers, gammas, backbone="mlp", seed=0):
    test = load_dataset("mnist5k", split="test")
    held_out = (test.images[:HELD_OUT], test.labels[:HELD_OUT])
    classifier = load_mnist_classifier("cpu").requires_grad_(False)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for layer in layers:
            for gamma in gammas:
                settings = {"vae_backbone": backbone, "vae_layer": layer, "vae_gamma": gamma,
                            "iterations": iterations, "seed": seed}
                print(f"vaegan settings: layer {layer}, gamma {gamma:g}", flush=True)
                rows.append(measure_setting(settings, Path(scratch) / f"l{layer}-g{gamma:g}", held_out, classifier))
    return {"schema": SCHEMA, "device": device_name("cpu"), **provenance(), "threads": torch.get_num_threads(),
            "held_out_images": HELD_OUT, "rows": rows}


def markdown_table(results):
    lines = ["| layer | gamma | FID (floor) | class shares | recon pixel MSE | recon class kept | train s |",
             "|---:|---:|---:|---|---:|---:|---:|"]
    for row in results["rows"]:
        s, r = row["settings"], row["reconstruction"]
        shares = (f"{100 * row['min_class_share']:.1f}-{100 * row['max_class_share']:.1f}%"
                  if row["min_class_share"] is not None else "-")
        lines.append(f"| {s['vae_layer']} | {s['vae_gamma']:g} | {row['fid']:.1f} ({row['fid_real_floor']:.1f}) | "
                     f"{shares} | {r['pixel_mse']:.4f} | {100 * r['class_kept']:.1f}% | {row['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python bench/studies/vaegan_settings.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="results JSON to write")
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--layers", default="1,2,3", help="comma-separated feature layers of D (1-based)")
    parser.add_argument("--gammas", default="0.1,1", help="comma-separated weights of the reconstruction term")
    parser.add_argument("--backbone", default="mlp", choices=("mlp", "dcgan"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        layers = [int(v) for v in args.layers.split(",") if v.strip()]
        gammas = [float(v) for v in args.gammas.split(",") if v.strip()]
    except ValueError:
        layers = gammas = []
    if args.iterations < 1 or not layers or not gammas:
        print("vaegan_settings: error: need --iterations >= 1 and comma-separated layers (integers) and gammas",
              file=sys.stderr)
        return 2
    write_and_report(measure(args.iterations, layers, gammas, args.backbone, args.seed), args.out, markdown_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
