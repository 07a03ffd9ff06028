"""Checkpoints: G, D, EMA, optimizers, loss scalers, iteration and RNG states in one file.

Written atomically (engine.io.atomic_write), so a crash mid-write never leaves a truncated checkpoint
behind; read with ``weights_only=True``, so loading never runs code from the file.
"""
from pathlib import Path

import torch

from .io import atomic_write

FORMAT = "ganforge-checkpoint/1"


def rng_state():
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack([s for s in torch.cuda.get_rng_state_all()])
    return state


def restore_rng_state(state):
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def save_checkpoint(path, train_state, iteration, data_shape, num_classes):
    """Write everything needed to resume training (or to sample) at ``iteration``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT,
        "iteration": iteration,
        "config": train_state.cfg.to_dict(),
        "data_shape": list(data_shape),
        "num_classes": num_classes,
        "G": train_state.G.state_dict(),
        "D": train_state.D.state_dict(),
        "G_ema": train_state.G_ema.state_dict() if train_state.G_ema is not None else None,
        "opt_g": train_state.opt_g.state_dict(),
        "opt_d": train_state.opt_d.state_dict(),
        "scaler_g": train_state.scaler_g.state_dict(),
        "scaler_d": train_state.scaler_d.state_dict(),
        "rng": rng_state(),
    }
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint safely; a missing or foreign file raises ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a ganforge checkpoint (expected format {FORMAT!r})")
    return state


# Fields that shape the models or the optimizer state: a resumed run must agree with its checkpoint on them.
ARCHITECTURE_FIELDS = ("model", "dataset", "image_size", "channels", "conditional", "z_dim", "width", "optimizer",
                       "penalty")


def restore_training_state(train_state, state, path="checkpoint"):
    """Load a checkpoint's weights, optimizer and scaler states and RNG into live training objects."""
    saved = state["config"]
    mismatched = [f"--{name.replace('_', '-')} {saved.get(name)!r} in the checkpoint, {getattr(train_state.cfg, name)!r} now"
                  for name in ARCHITECTURE_FIELDS if saved.get(name) != getattr(train_state.cfg, name)]
    if mismatched:
        raise ValueError(f"cannot resume from {path}: " + "; ".join(mismatched))
    train_state.G.load_state_dict(state["G"])
    train_state.D.load_state_dict(state["D"])
    if train_state.G_ema is not None and state["G_ema"] is not None:
        train_state.G_ema.load_state_dict(state["G_ema"])
    train_state.opt_g.load_state_dict(state["opt_g"])
    train_state.opt_d.load_state_dict(state["opt_d"])
    train_state.scaler_g.load_state_dict(state["scaler_g"])
    train_state.scaler_d.load_state_dict(state["scaler_d"])
    restore_rng_state(state["rng"])
    return state["iteration"]


def load_generator(path, device="cpu", use_ema=True, kernels="auto"):
    """Rebuild G from a checkpoint for sampling or scoring: returns (G in eval mode, TrainConfig, num_classes)."""
    from ..models import build_models

    from .config import TrainConfig

    state = load_checkpoint(path)
    cfg = TrainConfig.from_dict(state["config"])
    G, _ = build_models(cfg.model, tuple(state["data_shape"]), cfg.z_dim, state["num_classes"], cfg.width,
                        impl=kernels)
    weights = state["G_ema"] if use_ema and state["G_ema"] is not None else state["G"]
    G.load_state_dict(weights)
    return G.to(device).eval(), cfg, state["num_classes"]
