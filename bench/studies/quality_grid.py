"""The experiment grid of the recipe and speedrun searches: FID against training time for each row, beside the peers.

    python bench/studies/quality_grid.py --out FILE.json [--recipes a,b|toolbox|speedrun] [--peers a,b]
                                         [--marks 60,120,300] [--fid-samples 2000] [--device cpu|cuda]

A study, not a shipped command: it runs the measurement of `ganforge bench quality` (ganforge.bench.quality) over
the rows below instead of the user recipes. The records of 2026-11-29 to 2026-12-03 (recipe search, recipe table,
toolbox, speedrun searches) were made with these rows, then under `python -m ganforge.bench.quality`.
"""
import argparse
import sys

from ganforge.bench.quality import (SHIPPED, add_quality_arguments, checked_contenders, markdown_table,
                                    measure_curves)
from ganforge.bench.results import write_and_report
from ganforge.engine.recipes import PRE_SPEEDRUN, PRE_SPEEDRUN_R1_GAMMA, SPEEDRUN_MOMENTUM, recipe_settings

# The experiment rows: name -> the settings the row trains with (every row trains on mnist5k). A row named like a
# user recipe (engine.recipes) is that recipe. The other rows of the grid are built on PRE_SPEEDRUN, the settings
# every row was measured with before the speedrun (batch 64, lr 2e-4, fp32, no EMA, width 64 = the textbook MLP), so
# a row keeps its meaning when the shipped defaults move; the one row SHIPPED is TrainConfig exactly as
# `ganforge train` ships it now.
# The grid is model x objective: ns (the textbook non-saturating loss, no penalty), r1 (ns with lazy R1), hinge
# (no penalty) and wgan-gp (Wasserstein critic, 5 critic steps); then the searched variants.
def _pre_speedrun(**changes):
    """A row of the grid: PRE_SPEEDRUN with ``changes``, R1 at the gamma of its day (1) unless changed."""
    settings = {**PRE_SPEEDRUN, **changes}
    if settings.get("penalty", "r1") == "r1":
        settings.setdefault("penalty_weight", PRE_SPEEDRUN_R1_GAMMA)
    return settings


def _momentum(**changes):
    """A row of the speedrun's second search: one change to the first speedrun recipe (speedrun-momentum)."""
    return {**SPEEDRUN_MOMENTUM, **changes}


def _bf16_mlp(batch, lr, width=64, ema=(0.0, 0.0), **extra):
    """A speedrun search row: the MLP in bf16 at ``batch``, Adam ``lr`` for G and D, ``ema`` = (decay, ramp-up)."""
    return _pre_speedrun(model="mlp", precision="bf16", batch_size=batch, lr_g=lr, lr_d=lr, width=width, ema=ema[0],
                         ema_rampup=ema[1], **extra)


QUALITY_ROWS = {
    SHIPPED: recipe_settings(SHIPPED),                                     # the default recipe, as it ships
    "mlp-ns": recipe_settings("textbook"),                                 # the textbook GAN
    "mlp-r1": recipe_settings("mlp-r1"),                                   # the default of 2026-12-01
    "mlp-hinge": _pre_speedrun(model="mlp", loss="hinge", penalty="none"),
    "mlp-wgan-gp": _pre_speedrun(model="mlp", loss="wgan", penalty="wgan-gp", n_critic=5),
    "dcgan-ns": _pre_speedrun(model="dcgan", penalty="none"),
    "dcgan-r1": _pre_speedrun(model="dcgan"),
    "dcgan-hinge": _pre_speedrun(model="dcgan", loss="hinge", penalty="none"),
    "dcgan-wgan-gp": _pre_speedrun(model="dcgan", loss="wgan", penalty="wgan-gp", n_critic=5),
    # variants tried in the recipe search
    "mlp-r1-ema": _pre_speedrun(model="mlp", ema=0.999, ema_rampup=0.05),
    "dcgan-r1-ema": _pre_speedrun(model="dcgan", ema=0.999, ema_rampup=0.05),
    "dcgan-r1-aug-ema": _pre_speedrun(model="dcgan", ema=0.999, ema_rampup=0.05, augment="translation,cutout",
                                      ada_target=0.6),
    "dcgan-hinge-aug-ema": _pre_speedrun(model="dcgan", loss="hinge", penalty="none", augment="translation,cutout",
                                         ada_target=0.6, ema=0.999, ema_rampup=0.05),
    # the toolbox, each piece added to the default recipe of its model (or, for spectral norm on DCGAN, in its
    # classic setting: hinge loss, no penalty, SNGAN)
    "mlp-rpgan-r1r2": _pre_speedrun(model="mlp", loss="rpgan", penalty="r1+r2"),   # R3GAN"s objective, every D step
    "mlp-lsgan-r1": _pre_speedrun(model="mlp", loss="lsgan"),
    "mlp-r1-sn": _pre_speedrun(model="mlp", spectral_norm=True),
    "mlp-r1-fm": _pre_speedrun(model="mlp", feature_matching=1.0),
    "mlp-r1-lecam": _pre_speedrun(model="mlp", lecam=0.1),
    "dcgan-rpgan-r1r2": _pre_speedrun(model="dcgan", loss="rpgan", penalty="r1+r2"),
    "dcgan-hinge-sn": _pre_speedrun(model="dcgan", loss="hinge", penalty="none", spectral_norm=True),
    "dcgan-r1-lecam": _pre_speedrun(model="dcgan", lecam=0.1),
    # the speedrun search (FID per second of the default command on a 2-core CPU): bf16 (AMX) pays off on the MLP
    # from batch 256 up, so batch and learning rate move together; _bf16_mlp(batch, lr, width, (ema, ramp-up))
    "mlp-r1-bf16-b256": _bf16_mlp(256, 2e-4),
    "mlp-r1-bf16-b256-lr4": _bf16_mlp(256, 4e-4),
    "mlp-r1-bf16-b256-lr8": _bf16_mlp(256, 8e-4),
    "mlp-r1-bf16-b512-lr6": _bf16_mlp(512, 6e-4),
    "mlp-r1-bf16-b256-lr4-ema": _bf16_mlp(256, 4e-4, ema=(0.999, 0.05)),
    "mlp-r1-bf16-b256-lr8-ema": _bf16_mlp(256, 8e-4, ema=(0.999, 0.05)),
    "mlp-r1-bf16-b512-lr6-ema": _bf16_mlp(512, 6e-4, ema=(0.999, 0.05)),
    "mlp-r1-bf16-b256-lr12-ema": _bf16_mlp(256, 1.2e-3, ema=(0.999, 0.05)),
    "mlp-r1-bf16-b256-lr8-ema-w32": _bf16_mlp(256, 8e-4, 32, (0.999, 0.05)),
    "mlp-r1-bf16-b512-lr11-ema-w32": _bf16_mlp(512, 1.1e-3, 32, (0.999, 0.05)),
    "mlp-r1-bf16-b512-lr16-ema-w32": _bf16_mlp(512, 1.6e-3, 32, (0.999, 0.05)),
    "mlp-r1-bf16-b512-lr16-ema15-w32": _bf16_mlp(512, 1.6e-3, 32, (0.999, 0.15)),
    "mlp-r1-bf16-b512-lr16-ema9995-w32": _bf16_mlp(512, 1.6e-3, 32, (0.9995, 0.15)),   # what ships
    "mlp-r1-bf16-b512-lr16-ema9995r05-w32": _bf16_mlp(512, 1.6e-3, 32, (0.9995, 0.05)),
    "mlp-r1-bf16-b256-lr11-ema9995-w32": _bf16_mlp(256, 1.1e-3, 32, (0.9995, 0.15)),
    "mlp-r1-bf16-b512-lr24-ema9995-w32": _bf16_mlp(512, 2.4e-3, 32, (0.9995, 0.15)),
    "mlp-r1-bf16-b512-lr16-ema9998-w32": _bf16_mlp(512, 1.6e-3, 32, (0.9998, 0.25)),
    "mlp-r1-bf16-b512-lr16-ema9998-fm-w32": _bf16_mlp(512, 1.6e-3, 32, (0.9998, 0.25), feature_matching=1.0),
    "mlp-r1-bf16-b512-lr11-ema-w16": _bf16_mlp(512, 1.1e-3, 16, (0.999, 0.05)),
    "mlp-rpgan-r1r2-bf16-b256-lr8-ema": _bf16_mlp(256, 8e-4, ema=(0.999, 0.05), loss="rpgan", penalty="r1+r2"),
    # the speedrun"s second search (bench/results/2026-12-03_speedrun-search-cpu/): changes that cost no time per
    # iteration, each to the default of 2026-12-02 (the recipe speedrun-momentum, the row "default-2026-12-02")
    "default-2026-12-02": recipe_settings("speedrun-momentum"),
    "default-r1g03": _momentum(penalty_weight=0.3),
    "default-r1g01": _momentum(penalty_weight=0.1),
    "default-r1g3": _momentum(penalty_weight=3.0),
    "default-beta0": _momentum(beta1=0.0, beta2=0.99),
    "default-b1-0": _momentum(beta1=0.0),
    "default-b2-099": _momentum(beta2=0.99),
    "default-beta0-r1g3": _momentum(beta1=0.0, beta2=0.99, penalty_weight=3.0),
    "default-beta0-lr11": _momentum(beta1=0.0, beta2=0.99, lr_g=1.1e-3, lr_d=1.1e-3),
    "default-beta0-b2-09": _momentum(beta1=0.0, beta2=0.9),
    "default-beta0-r1g6": _momentum(beta1=0.0, beta2=0.99, penalty_weight=6.0),
    "default-beta0-r1g10": _momentum(beta1=0.0, beta2=0.99, penalty_weight=10.0),
    "default-beta0-r1g3-ema9998": _momentum(beta1=0.0, beta2=0.99, penalty_weight=3.0, ema=0.9998, ema_rampup=0.25),
    "default-beta0-r1g3-lr24": _momentum(beta1=0.0, beta2=0.99, penalty_weight=3.0, lr_g=2.4e-3, lr_d=2.4e-3),
    "default-beta0-r1g3-b2-09": _momentum(beta1=0.0, beta2=0.9, penalty_weight=3.0),
    "default-beta0-r1g3-b256": _momentum(beta1=0.0, beta2=0.99, penalty_weight=3.0, batch_size=256, lr_g=1.1e-3,
                                         lr_d=1.1e-3),
    "default-ttur": _momentum(lr_g=1.2e-3, lr_d=2.4e-3),
    "default-z32": _momentum(z_dim=32),
}
# The toolbox's rows and the default recipes they are measured against, in one run.
TOOLBOX = ("mlp-r1", "mlp-rpgan-r1r2", "mlp-lsgan-r1", "mlp-r1-sn", "mlp-r1-fm", "mlp-r1-lecam",
           "dcgan-r1", "dcgan-rpgan-r1r2", "dcgan-hinge-sn", "dcgan-r1-lecam")
# The speedrun searches' recipes, in their order (bench/results/2026-12-02_speedrun-search-cpu/ and
# 2026-12-03_speedrun-search-cpu/).
SPEEDRUN = tuple(name for name in QUALITY_ROWS
                 if (name.startswith("mlp-") and "-bf16-" in name) or name.startswith(SHIPPED + "-"))
GROUPS = {"toolbox": TOOLBOX, "speedrun": SPEEDRUN}  # names --recipes expands


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python bench/studies/quality_grid.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="results JSON to write")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the recipes then run with CUDA graphs)")
    add_quality_arguments(parser, ",".join(QUALITY_ROWS),
                          "comma-separated rows of QUALITY_ROWS; 'toolbox' and 'speedrun' stand for their rows")
    args = parser.parse_args(argv)
    try:
        names, marks = checked_contenders(args, QUALITY_ROWS, GROUPS)
    except ValueError as exc:
        print(f"quality_grid: error: {exc}", file=sys.stderr)
        return 2
    results = measure_curves(names, marks, args.fid_samples, args.seed, device=args.device,
                             progress=not args.no_progress, rows=QUALITY_ROWS)
    write_and_report(results, args.out, markdown_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
