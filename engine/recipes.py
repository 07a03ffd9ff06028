"""Named recipes: sets of TrainConfig settings asked for by name (`ganforge train --recipe NAME`). A recipe sets
the defaults; a --config file and the flags given with it override it. Each carries a one-line description, which
`ganforge train --help` and docs/flags.md show.
"""
from typing import NamedTuple


class Recipe(NamedTuple):
    description: str
    settings: dict


# The settings the MLP recipes shared before the speedrun (the shipped defaults of 2026-12-01).
PRE_SPEEDRUN = {"model": "mlp", "width": 64, "batch_size": 64, "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5,
                "beta2": 0.999, "precision": "fp32", "ema": 0.0, "ema_rampup": 0.0, "iterations": 12000}
# R1's gamma then (engine.config.PENALTY_WEIGHTS'; the MLP's preset is now 10). Not in PRE_SPEEDRUN: a recipe built
# on it with another penalty takes that penalty's own default weight.
PRE_SPEEDRUN_R1_GAMMA = 1.0

# The first speedrun (the default of 2026-12-02), before the MLP's betas became (0, 0.99) and its R1 gamma 10.
SPEEDRUN_MOMENTUM = {"model": "mlp", "loss": "ns", "penalty": "r1", "penalty_weight": 1.0, "width": 32,
                     "batch_size": 512, "lr_g": 1.6e-3, "lr_d": 1.6e-3, "beta1": 0.5, "beta2": 0.999,
                     "ema": 0.9995, "ema_rampup": 0.15, "iterations": 8000}

RECIPES = {
    "default": Recipe("what ships, each model's preset (the MLP's is the speedrun recipe)", {}),
    "speedrun-momentum": Recipe("the first speedrun recipe, the default of 2026-12-02 (Adam betas (0.5, 0.999), R1 "
                                "gamma 1, 8,000 iterations)", SPEEDRUN_MOMENTUM),
    "textbook": Recipe("the seed's textbook MLP GAN (no penalty, the textbook widths, batch 64, Adam 2e-4, fp32, no "
                       "EMA)", {**PRE_SPEEDRUN, "loss": "ns", "penalty": "none"}),
    "mlp-r1": Recipe("the default until 2026-12-01, the textbook GAN with lazy R1 (gamma 1 on every 4th D step)",
                     {**PRE_SPEEDRUN, "loss": "ns", "penalty": "r1", "penalty_weight": PRE_SPEEDRUN_R1_GAMMA}),
}


def recipe_settings(name):
    """The settings of recipe ``name``; an unknown name raises ValueError listing the known ones."""
    name = {"default-2026-12-02": "speedrun-momentum"}.get(name, name)  # its name in results of 2026-12-02/03
    if name not in RECIPES:
        raise ValueError(f"--recipe: unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    return dict(RECIPES[name].settings)
