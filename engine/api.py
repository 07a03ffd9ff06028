"""The Python API re-exported by the `ganforge` package: train, sample, score, load a checkpoint.

Each function is the library form of a subcommand and does exactly what that command does, without
printing; bad input raises ValueError (DataError, FIDError and friends are subclasses or siblings of it).
"""
import dataclasses

from .checkpoint import load_checkpoint, load_generator
from .config import TrainConfig
from .metrics.evaluate import score_checkpoint
from .sampling import generate, requested_attributes, requested_labels

__all__ = ["TrainConfig", "train", "sample", "score", "load_generator", "load_checkpoint"]


def train(config=None, *, dataset=None, resume=None, overwrite=False, **overrides):
    """Train a GAN and return its summary (the dict written to summary.json).

    config: a TrainConfig (default: TrainConfig()); keyword overrides replace its fields, e.g.
        ``train(model="dcgan", iterations=500, out="runs/x")``.
    dataset: an engine.data.Dataset to train on instead of loading ``config.dataset``.
    resume: a checkpoint.pt (or run folder) to continue from.
    overwrite: replace a run already in ``config.out`` (otherwise a used folder is refused).
    """
    from .trainer import train as run_training

    # without a config, the overrides pick the presets (train(model="dcgan") gets DCGAN's batch, widths, ...)
    config = TrainConfig(**overrides) if config is None else dataclasses.replace(config, **overrides)
    return run_training(config, dataset=dataset, resume=resume, overwrite=overwrite)


def sample(checkpoint, n=64, *, label=None, attributes=None, use_ema=True, seed=0, device="cpu"):
    """``n`` generated images (float32 (N, C, H, W) in [-1, 1], on the CPU) from a checkpoint's generator.

    label: one class for a conditional model (default: classes in turn).
    attributes: {name: value} for a model trained with --condition-on, e.g. {"Smiling": 1, "Eyeglasses": -1}; the
        attributes not given are drawn, whole vectors at a time, from those the model trained on.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    G, cfg, num_classes = load_generator(checkpoint, device, use_ema)
    labels = requested_labels(label, n, num_classes, checkpoint, option="label")
    if labels is None:
        labels = requested_attributes(G, n, attributes, seed, checkpoint, option="attributes")
    images, _ = generate(G, n, cfg.z_dim, device, num_classes, seed=seed, labels=labels)
    return images


def score(checkpoint, n_samples=2000, *, metrics="fid", use_ema=True, device="cpu"):
    """The checkpoint's generator scored against the held-out real set, each metric with its real floor.

    metrics: comma-separated fid, kid, is, pr, dc, mifid, intra-fid, or "all" (what `ganforge score` does).
    """
    return score_checkpoint(checkpoint, n_samples, use_ema, device, metrics=metrics)
