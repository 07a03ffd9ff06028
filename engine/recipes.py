"""Named recipes: sets of TrainConfig settings asked for by name (`ganforge train --recipe NAME`). A recipe sets
the defaults; a --config file and the flags given with it override it.

    default   TrainConfig as it ships: the speedrun recipe (README "Default run"; bench/results/speedrun-*)
    textbook  the seed's textbook MLP GAN: non-saturating loss, no penalty, the textbook widths, batch 64, Adam
              2e-4, fp32, no EMA, 12,000 iterations
    mlp-r1    the default until 2026-12-01: the textbook GAN with lazy R1 (gamma 1 on every 4th D step)
"""

# The settings the MLP recipes shared before the speedrun (the shipped defaults of 2026-12-01).
PRE_SPEEDRUN = {"model": "mlp", "width": 64, "batch_size": 64, "lr_g": 2e-4, "lr_d": 2e-4, "precision": "fp32",
                "ema": 0.0, "ema_rampup": 0.0, "iterations": 12000}

RECIPES = {
    "default": {},
    "textbook": {**PRE_SPEEDRUN, "loss": "ns", "penalty": "none"},
    "mlp-r1": {**PRE_SPEEDRUN, "loss": "ns", "penalty": "r1"},
}


def recipe_settings(name):
    """The settings of recipe ``name``; an unknown name raises ValueError listing the known ones."""
    if name not in RECIPES:
        raise ValueError(f"--recipe: unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    return dict(RECIPES[name])
