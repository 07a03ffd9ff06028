"""Named recipes: sets of TrainConfig settings asked for by name (`ganforge train --recipe NAME`). A recipe sets
the defaults; a --config file and the flags given with it override it.

    default   TrainConfig as it ships: the speedrun recipe (README "Default run"; bench/results/speedrun-*)
    textbook  the seed's textbook MLP GAN: non-saturating loss, no penalty, the textbook widths, batch 64, Adam
              2e-4, fp32, no EMA, 12,000 iterations
    mlp-r1    the default until 2026-12-01: the textbook GAN with lazy R1 (gamma 1 on every 4th D step)
    default-2026-12-02  the first speedrun's recipe: Adam betas (0.5, 0.999), R1 gamma 1
"""

# The settings the MLP recipes shared before the speedrun (the shipped defaults of 2026-12-01).
PRE_SPEEDRUN = {"model": "mlp", "width": 64, "batch_size": 64, "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5,
                "beta2": 0.999, "precision": "fp32", "ema": 0.0, "ema_rampup": 0.0, "iterations": 12000}
# R1's gamma then (PENALTY_DEFAULTS'; the MLP's default is now R1_GAMMA_DEFAULTS'). Not in PRE_SPEEDRUN: a recipe
# built on it with another penalty takes that penalty's own default weight.
PRE_SPEEDRUN_R1_GAMMA = 1.0

# The default of 2026-12-02 (the first speedrun), before the MLP's betas became (0, 0.99) and its R1 gamma 10.
DEFAULT_2026_12_02 = {"model": "mlp", "loss": "ns", "penalty": "r1", "penalty_weight": 1.0, "width": 32,
                      "batch_size": 512, "lr_g": 1.6e-3, "lr_d": 1.6e-3, "beta1": 0.5, "beta2": 0.999,
                      "ema": 0.9995, "ema_rampup": 0.15, "iterations": 8000}

RECIPES = {
    "default": {},
    "default-2026-12-02": DEFAULT_2026_12_02,
    "textbook": {**PRE_SPEEDRUN, "loss": "ns", "penalty": "none"},
    "mlp-r1": {**PRE_SPEEDRUN, "loss": "ns", "penalty": "r1", "penalty_weight": PRE_SPEEDRUN_R1_GAMMA},
}


def recipe_settings(name):
    """The settings of recipe ``name``; an unknown name raises ValueError listing the known ones."""
    if name not in RECIPES:
        raise ValueError(f"--recipe: unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    return dict(RECIPES[name])
