"""The README's picture: what `ganforge train` gives, drawn from committed records only (nothing is trained).

Left: the final sample grid of the newest default-run record. Right: FID against seconds of training for the
default recipe and PyTorch-GAN's two scripts, from the newest time-to-quality record, with the real-data floor
dashed. When a newer record of either kind is committed, point DEFAULT_RUN or TIME_TO_QUALITY at it.

Regenerate from the repository root:

    python docs/figures/default_run.py

It writes docs/figures/default_run.png (needs matplotlib and pillow, both installed with ganforge).
"""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# The newest default-run record: seed 0's final sample grid.
DEFAULT_RUN = "bench/results/2026-12-03_default-train-cpu/seed0"
# The newest time-to-quality record: one JSON file per core, each holding "curves".
TIME_TO_QUALITY = ["bench/results/2026-12-03_speedrun-table-cpu/speedrun-table-cpu-2026-12-03-core0.json",
                   "bench/results/2026-12-03_speedrun-table-cpu/speedrun-table-cpu-2026-12-03-core1.json"]
OUT = ROOT / "docs/figures/default_run.png"

# curve name in the record -> (label, colour, marker); curves not named here are left out.
CURVES = {
    "default": ("ganforge default recipe", "#1f5fa8", "o"),
    "pytorch-gan-wgan_gp": ("PyTorch-GAN wgan_gp", "#d1741f", "s"),
    "pytorch-gan-dcgan": ("PyTorch-GAN dcgan", "#8a8a8a", "^"),
}


def load_curves(paths):
    curves, floor, dates, machine = {}, None, set(), None
    for rel in paths:
        record = json.loads((ROOT / rel).read_text(encoding="utf-8"))
        floor = record["fid_real_floor"]
        dates.add(record["date"][:10])
        machine = record["device"]
        for curve in record["curves"]:
            if curve["name"] in CURVES:
                points = sorted(curve["points"], key=lambda p: p["train_seconds"])
                curves[curve["name"]] = ([p["train_seconds"] for p in points], [p["fid"] for p in points])
    return curves, floor, sorted(dates), machine


def main():
    summary = json.loads((ROOT / DEFAULT_RUN / "summary.json").read_text(encoding="utf-8"))
    grid = Image.open(ROOT / DEFAULT_RUN / "samples_final.png").convert("L")
    curves, floor, dates, machine = load_curves(TIME_TO_QUALITY)

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.6), gridspec_kw={"width_ratios": [1, 1.35]})
    left.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    left.set_axis_off()
    left.set_title(f"default run, final samples\nFID {summary['fid']:.2f} (real floor "
                   f"{summary['fid_real_floor']:.2f}), {summary['iterations']:,} iterations", fontsize=10)

    for name, (label, colour, marker) in CURVES.items():
        if name in curves:
            seconds, fid = curves[name]
            right.plot(seconds, fid, marker=marker, color=colour, label=label, linewidth=2 if name == "default" else 1.4)
    right.axhline(floor, color="black", linestyle="--", linewidth=1, label=f"real-data floor ({floor:.2f})")
    right.set_yscale("log")
    right.set_xlabel("seconds of training (one CPU thread)")
    right.set_ylabel("FID (2,000 samples, log scale)")
    right.set_title("FID over training time, MNIST-5k", fontsize=10)
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=8.5, loc="center left", bbox_to_anchor=(0.33, 0.55))

    caption = (f"Samples: {DEFAULT_RUN}/samples_final.png ({summary['date'][:10]}, {summary['device']}, "
               f"{summary['precision']})\n"
               f"Curves: {Path(TIME_TO_QUALITY[0]).parent}/ ({', '.join(Path(p).name for p in TIME_TO_QUALITY)})\n"
               f"{', '.join(dates)}; {machine.removeprefix('cpu: ')}; each contender on its own core")
    fig.text(0.5, 0.012, caption, ha="center", va="bottom", fontsize=7, color="#444444", linespacing=1.5)
    fig.tight_layout(rect=(0, 0.1, 1, 0.97))
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
