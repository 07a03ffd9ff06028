"""Drawing samples from a trained generator: the labels or attribute vectors asked for, batches of samples, a
PNG grid, a walk through the latent space, and synthetic labelled data (.npz) for training a classifier.

Used by the metrics (samples to score), the applications and the commands.
"""
import math

import numpy as np
import torch
from torch.nn import functional as F

from ..models import attribute_embedding, draw_attributes
from .checkpoint import load_generator
from .data import MIXTURES, load_dataset
from .images import image_arrays, save_samples
from .io import atomic_write


@torch.no_grad()
def run_generator(G, z, labels=None):
    """G(z, labels) as samples are drawn: in eval mode (BatchNorm on its running statistics), without
    gradients, G's own mode restored afterwards; float32 on the CPU."""
    was_training = G.training
    G.eval()
    try:
        return G(z, labels).float().cpu()
    finally:
        G.train(was_training)


def generate(G, n, z_dim, device, num_classes=0, batch_size=500, seed=0, labels=None, rows=None):
    """n samples from G (on the CPU, float32) and the labels they were asked for (None if unconditional).

    rows: a slice of the n samples to generate (a torchrun rank's part); the latents are drawn for all n, so the
    parts of all ranks together are exactly the n samples of one process."""
    gen = torch.Generator().manual_seed(seed)
    if num_classes and labels is None:
        labels = torch.arange(n) % num_classes
    if labels is None:  # an attribute-conditioned G: vectors from its bank (None for an unconditional one)
        labels = requested_attributes(G, n, seed=seed)
    z_all = torch.cat([torch.randn(min(batch_size, n - i), z_dim, generator=gen) for i in range(0, n, batch_size)])
    if rows is not None:
        z_all = z_all[rows]
        labels = labels[rows] if labels is not None else None
    chunks = []
    for i in range(0, z_all.shape[0], batch_size):
        z = z_all[i:i + batch_size].to(device)
        y = labels[i:i + z.shape[0]].to(device) if labels is not None else None
        chunks.append(run_generator(G, z, y))
    return torch.cat(chunks), labels


def requested_labels(label, n, num_classes, checkpoint, option="--label"):
    """``n`` copies of class ``label`` for a conditional model, or None (no label asked for: classes in turn)."""
    if label is None:
        return None
    if not num_classes or not 0 <= label < num_classes:
        raise ValueError(f"{option} {label} needs a conditional model with that class; {checkpoint} has "
                         f"{num_classes} classes")
    return torch.full((n,), label)


def parse_attribute_settings(items, option="--set"):
    """{"Smiling": 1.0, ...} from ["Smiling=1", "Eyeglasses=-1"] (a -1/1 attribute: 1 on, -1 off; values between
    or beyond are accepted, as G's attribute map is linear, but training saw only -1 and 1)."""
    settings = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        try:
            number = float(value) if sep and name.strip() else None
        except ValueError:
            number = None
        if number is None or not math.isfinite(number):
            raise ValueError(f"{option} {item!r}: expected NAME=VALUE with a finite number, e.g. Smiling=1 or "
                             "Eyeglasses=-1")
        if name.strip() in settings:
            raise ValueError(f"{option} sets {name.strip()} twice")
        settings[name.strip()] = number
    return settings


def requested_attributes(G, n, settings=None, seed=0, checkpoint="this model", option="--set"):
    """``n`` attribute vectors (float32 (n, K), CPU) for an attribute-conditioned G: whole vectors drawn from its
    bank (seeded), then each attribute of ``settings`` set to its value in all of them. None for a G without
    attributes (an error if settings were asked of it)."""
    names = getattr(G, "attribute_names", ())
    if not names:
        if settings:
            raise ValueError(f"{option} sets attributes, but {checkpoint} is not conditioned on attributes (train "
                             "with --condition-on)")
        return None
    unknown = [name for name in settings or {} if name not in names]
    if unknown:
        raise ValueError(f"{option}: {', '.join(unknown)} not among the attributes {checkpoint} is conditioned on "
                         f"({', '.join(names)})")
    bank = attribute_embedding(G).bank
    vectors = draw_attributes(G, n, torch.Generator(bank.device).manual_seed(seed + 1)).cpu()
    for name, value in (settings or {}).items():
        vectors[:, names.index(name)] = value
    return vectors


def sample_grid(ckpt_path, out_path, n=64, label=None, use_ema=True, seed=0, device="cpu", settings=None):
    """A PNG grid of ``n`` samples: of class ``label``, or with the attribute ``settings`` ({name: value}; the
    other attributes drawn from the model's bank), or classes in turn."""
    G, cfg, num_classes = load_generator(ckpt_path, device, use_ema)
    labels = requested_labels(label, n, num_classes, ckpt_path)
    if labels is None:
        labels = requested_attributes(G, n, settings, seed, ckpt_path)
    samples, _ = generate(G, n, cfg.z_dim, device, num_classes, seed=seed, labels=labels)
    nrow = num_classes if num_classes and label is None and num_classes <= 16 else None
    real = None
    if cfg.dataset in MIXTURES:
        real = load_dataset(cfg.dataset, split="test").images
    return save_samples(samples, out_path, nrow=nrow, real_points=real)


def slerp(a, b, t):
    """Spherical interpolation between latent batches a and b (N, D) at fractions t (T,): (N, T, D).

    Gaussian latents concentrate near a sphere, so walking along it keeps every point typical (a straight
    line through the middle passes through unlikely, low-norm codes). Falls back to a straight line where
    a and b are (anti)parallel.
    """
    a_unit, b_unit = F.normalize(a, dim=1), F.normalize(b, dim=1)
    omega = torch.acos((a_unit * b_unit).sum(1).clamp(-1 + 1e-7, 1 - 1e-7))[:, None, None]  # (N, 1, 1)
    t = t.reshape(1, -1, 1)
    linear = (1 - t) * a[:, None] + t * b[:, None]
    sin_omega = torch.sin(omega)
    spherical = (torch.sin((1 - t) * omega) * a[:, None] + torch.sin(t * omega) * b[:, None]) / sin_omega
    return torch.where(sin_omega.abs() > 1e-4, spherical, linear)


@torch.no_grad()
def latent_walk(ckpt_path, out_path, rows=8, per_row=10, use_ema=True, seed=0, device="cpu"):
    """A grid whose rows walk G's latent space between two random codes: smooth rows mean G has learned a
    continuous space, not a lookup of training images. A conditional model keeps each row's class fixed."""
    if rows < 1 or per_row < 2:
        raise ValueError(f"--rows must be >= 1 and --per-row >= 2, got {rows} and {per_row}")
    G, cfg, num_classes = load_generator(ckpt_path, device, use_ema)
    if len(G.data_shape) != 3:
        raise ValueError(f"latent walks draw images; {ckpt_path} generates {G.data_shape} points")
    gen = torch.Generator().manual_seed(seed)
    ends = torch.randn(2, rows, cfg.z_dim, generator=gen)
    z = slerp(ends[0], ends[1], torch.linspace(0, 1, per_row)).reshape(rows * per_row, cfg.z_dim)
    labels = (torch.arange(rows) % num_classes).repeat_interleave(per_row) if num_classes else None
    if G.attribute_names:  # one attribute vector per row
        labels = requested_attributes(G, rows, seed=seed).repeat_interleave(per_row, dim=0)
    images = run_generator(G, z.to(device), labels.to(device) if labels is not None else None)
    return save_samples(images, out_path, nrow=per_row)


@torch.no_grad()
def export_samples(ckpt_path, out_path, count, label=None, use_ema=True, seed=0, device="cpu", settings=None):
    """Write ``count`` generated images (uint8 NHWC) and, for conditional models, their labels to an .npz —
    synthetic training data for a classifier, readable back with ``--dataset npy --data-path FILE``. An
    attribute-conditioned model's images come with their attribute vectors (``attributes``, int8 -1/1 where the
    setting was -1 or 1; float32 otherwise) and ``attribute_names`` instead of labels."""
    if count < 1:
        raise ValueError(f"--count must be >= 1, got {count}")
    G, cfg, num_classes = load_generator(ckpt_path, device, use_ema)
    if len(G.data_shape) != 3:
        raise ValueError(f"augmentation exports images; {ckpt_path} generates {G.data_shape} points")
    labels = requested_labels(label, count, num_classes, ckpt_path)
    attributes = None if labels is not None else requested_attributes(G, count, settings, seed, ckpt_path)
    images, labels = generate(G, count, cfg.z_dim, device, num_classes, seed=seed,
                              labels=labels if attributes is None else attributes)
    if attributes is None:
        arrays = image_arrays(images, labels)
    else:
        arrays = image_arrays(images)
        whole = bool((attributes.abs() == 1).all())
        arrays["attributes"] = attributes.numpy().astype(np.int8 if whole else np.float32)
        arrays["attribute_names"] = np.array(G.attribute_names)
    return atomic_write(out_path, lambda f: np.savez_compressed(f, **arrays)), arrays
