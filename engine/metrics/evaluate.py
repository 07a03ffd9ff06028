"""What a trained generator is used for: FID against held-out real data, class accuracy, mode coverage,
sample grids, latent-space walks, and synthetic labelled data for training a classifier."""

import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ...models import attribute_embedding, draw_attributes
from ..data import MIXTURE_STD, MIXTURES, DataError, Dataset, load_dataset, mixture_centers, to_unit_range
from ..images import image_arrays, save_samples
from ..io import atomic_write

DIGIT_DATASETS = ("mnist5k", "mnist-idx")  # where the embedded digit classifier can judge classes


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


# Formats holding one set: FID's held-out half is split off it. Every other dataset must have its test split.
ONE_SET_DATASETS = ("folder", "npy")


def reference_sets(cfg, seed=0):
    """(held-out real set, disjoint real pool) as Datasets (labels where the data have them): the test split and
    the train split where the dataset has both, else two disjoint random halves of the one set. A dataset with a
    test split that is missing or unreadable is an error, never a silent switch to another reference set."""
    kwargs = dict(image_size=cfg.image_size, channels=cfg.channels, seed=cfg.seed)
    one_set = cfg.dataset in ONE_SET_DATASETS or (cfg.dataset == "mnist-idx" and Path(cfg.data_path).is_file())
    if one_set:
        everything = load_dataset(cfg.dataset, cfg.data_path, split="train", **kwargs)
        perm = torch.randperm(len(everything), generator=torch.Generator().manual_seed(seed))
        half = len(everything) // 2
        return _subset(everything, perm[:half]), _subset(everything, perm[half:])
    try:
        held_out = load_dataset(cfg.dataset, cfg.data_path, split="test", **kwargs)
    except DataError as exc:
        raise DataError(f"FID's held-out set (the test split) cannot be read: {exc}; restore it, or pass "
                        "--fid-samples 0 to train without FID") from None
    pool = load_dataset(cfg.dataset, cfg.data_path, split="train", **kwargs)
    return held_out, pool


def _subset(dataset, index):
    labels = dataset.labels[index] if dataset.labels is not None else None
    return Dataset(dataset.pixels[index], labels, dataset.num_classes, dataset.name)


def check_scoring(cfg):
    """Before training: fail now if the end-of-run scores cannot be computed. Returns the FID reference sets
    (None when FID is off or the data are 2-D points), for evaluate_generator."""
    if cfg.dataset in MIXTURES:
        if cfg.fid_every:
            raise ValueError(f"--fid-every scores images; dataset {cfg.dataset!r} is 2-D points")
        return None
    if cfg.fid_samples == 0 and cfg.fid_every == 0:
        return None
    from .fid import check_backbone

    check_backbone(cfg.fid_backbone, cfg.inception_weights)
    return reference_sets(cfg)


def mode_coverage(points, name, min_count=None):
    """Mode-collapse metric for samples of a 2-D mixture.

    A sample is high quality when it lies within 3 standard deviations of its nearest center; a mode is
    covered when at least `min_count` high-quality samples fall on it (default: a tenth of the share a
    perfect generator would give it, at least 1). Returns modes_covered, num_modes,
    high_quality_fraction and the per-mode counts.
    """
    points = torch.as_tensor(points).detach().float().cpu().reshape(-1, 2)
    centers = mixture_centers(name)
    if len(points) == 0:
        return {"modes_covered": 0, "num_modes": len(centers), "high_quality_fraction": 0.0,
                "counts": [0] * len(centers)}
    if min_count is None:
        min_count = max(1, int(0.1 * len(points) / len(centers)))
    finite = torch.isfinite(points).all(dim=1)
    dist = torch.cdist(torch.nan_to_num(points, nan=1e9), centers)
    nearest_dist, nearest = dist.min(dim=1)
    good = finite & (nearest_dist <= 3 * MIXTURE_STD[name])
    counts = torch.bincount(nearest[good], minlength=len(centers))
    return {
        "modes_covered": int((counts >= min_count).sum()),
        "num_modes": len(centers),
        "high_quality_fraction": float(good.float().mean()),
        "counts": counts.tolist(),
    }


def evaluate_generator(G, cfg, num_classes, device, n_samples, progress=False, references=None, world=None,
                       metrics=None):
    """The end-of-training scores written into summary.json: each metric of ``metrics`` (default cfg.metrics;
    engine.metrics.scores) for n_samples generated images against the held-out real set, and beside each its
    real floor (``NAME_real_floor``): the same metric for as many real images, disjoint from the held-out set —
    what a perfect generator would score at these sample sizes. MiFID's memorisation reference is the training
    set, so its floor scores the held-out images against it.

    One backbone pass per image set feeds every metric; the real sets' features are cached (scores.cached_features).
    references: (held-out, pool) Datasets from check_scoring, else loaded here.
    world: under torchrun, every rank calls this: each generates and featurises its part of the images, the
    features are gathered, and every rank computes the same scores.
    """
    from ..distributed import World
    from ..config import parse_metrics
    from .scores import cached_features, isolated_pixels, memorization_informed_fid, score_features

    world = world or World()
    if n_samples == 0:
        return {"fid": None, "fid_real_floor": None}
    if cfg.dataset in MIXTURES:
        fake, _ = generate(G, n_samples, cfg.z_dim, device, num_classes)
        return {"fid": None, "fid_real_floor": None, **mode_coverage(fake, cfg.dataset)}
    from .fid import FIDScorer, class_accuracy_of, class_shares_of

    names = parse_metrics(cfg.metrics if metrics is None else metrics, conditional=bool(num_classes))
    scorer = FIDScorer(cfg.fid_backbone, cfg.inception_weights, device, world=world)
    held_out, pool = references if references is not None else reference_sets(cfg)
    n = min(n_samples, len(pool))
    real = cached_features(scorer, held_out.images)
    train = cached_features(scorer, pool.images) if "mifid" in names else None
    fake_images, labels = generate(G, n, cfg.z_dim, device, num_classes, rows=world.rows(n))
    if world.any(not torch.isfinite(fake_images).all()):  # a diverged G: nothing to score
        return {"fid": float("nan"), "fid_real_floor": None, "fid_samples": n, "metrics": list(names)}
    fake = scorer.features(fake_images)
    fake_labels = world.gather(labels) if labels is not None else None
    floor_rows = torch.randperm(len(pool), generator=torch.Generator().manual_seed(1))[:n]
    floor_images = to_unit_range(pool.pixels[floor_rows])
    floor = train.rows(floor_rows.to(train.pool.device)) if train is not None else scorer.features(
        floor_images[world.rows(n)])
    real_labels = held_out.labels if num_classes else None
    scores = score_features(names, real, fake, train, real_labels, fake_labels, num_classes)
    floors = score_features([m for m in names if m != "mifid"], real, floor, None, real_labels,
                            pool.labels[floor_rows] if num_classes and pool.labels is not None else None,
                            num_classes)
    if "mifid" in names:  # the held-out images are real and were never trained on
        floors["mifid"] = memorization_informed_fid(train.pool, real.pool)
    out = {"metrics": list(names), "fid_samples": n, "fid_reference_size": len(held_out),
           "fid_backbone": cfg.fid_backbone, "fid": scores.pop("fid", None), "fid_real_floor": floors.pop("fid", None)}
    for key, value in scores.items():
        out[key] = value
        if key in floors:
            out[f"{key}_real_floor"] = floors[key]
    if fake_images.dim() == 4 and fake_images.shape[1] == 1:  # grey images: salt noise, beside the real floor's
        out["isolated_pixels"] = isolated_pixels(world.gather(fake_images))
        out["isolated_pixels_real_floor"] = isolated_pixels(floor_images)
    if cfg.dataset in DIGIT_DATASETS and scorer.classifier is not None:
        predicted = fake.logits.argmax(dim=1).cpu()  # the digit classifier's own reading, from the same pass
        out.update(class_shares_of(predicted))
        if num_classes:
            out["class_accuracy"] = class_accuracy_of(predicted, fake_labels)
    return out


def sample_grid(ckpt_path, out_path, n=64, label=None, use_ema=True, seed=0, device="cpu", settings=None):
    """A PNG grid of ``n`` samples: of class ``label``, or with the attribute ``settings`` ({name: value}; the
    other attributes drawn from the model's bank), or classes in turn."""
    from ..checkpoint import load_generator

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


def score_checkpoint(ckpt_path, n_samples=2000, use_ema=True, device="cpu", metrics="fid"):
    """A checkpoint's generator scored as at the end of its run (evaluate_generator), with ``metrics``."""
    from ..checkpoint import load_generator

    G, cfg, num_classes = load_generator(ckpt_path, device, use_ema)
    return evaluate_generator(G, cfg, num_classes, device, n_samples, metrics=metrics)


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
    from ..checkpoint import load_generator

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
    from ..checkpoint import load_generator

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


# FID thresholds whose first crossing (in training seconds) summary.json records.
FID_MILESTONES = (200, 100, 50, 25, 10)


class FIDTracker:
    """--fid-every: FID of the sampling generator during training, against real statistics computed once.

    Scoring is side work (the trainer pauses its clock); a scoring is skipped while the time spent scoring is
    above ``cfg.fid_budget`` of the training time so far, so tracking costs at most about that share.
    """

    def __init__(self, cfg, references, device, world=None):
        from ..distributed import World
        from .fid import FIDScorer

        from .scores import cached_features

        self.cfg, self.device, self.world = cfg, device, world or World()
        self.scorer = FIDScorer(cfg.fid_backbone, cfg.inception_weights, device, world=self.world)
        self.scorer.set_real(features=cached_features(self.scorer, references[0].images))
        self.seconds_spent = 0.0
        self.points = []

    def due(self, iteration, train_seconds):
        return iteration % self.cfg.fid_every == 0 and self.seconds_spent <= self.cfg.fid_budget * train_seconds

    def score(self, G, iteration, train_seconds):
        """Score G now; returns the point (iteration, train_seconds, fid, precision, recall, classes found) and
        whether it is the best. One backbone pass over the samples feeds every figure."""
        from .fid import class_shares_of
        from .scores import precision_recall

        start = time.perf_counter()
        n = self.cfg.fid_every_samples
        fake, _ = generate(G, n, self.cfg.z_dim, self.device, getattr(G, "num_classes", 0), seed=12345,
                           rows=self.world.rows(n))
        point = {"iteration": iteration, "train_seconds": round(train_seconds, 3)}
        if self.world.any(not torch.isfinite(fake).all()):
            point["fid"] = float("nan")
        else:
            features = self.scorer.features(fake)
            point["fid"] = self.scorer.score_fake(features=features)
            if point["fid"] == point["fid"]:
                point.update(precision_recall(self.scorer.real.pool, features.pool))
            if self.scorer.classifier is not None and self.cfg.dataset in DIGIT_DATASETS:
                point["classes_found"] = class_shares_of(features.logits.argmax(dim=1).cpu())["classes_found"]
        best = math.isfinite(point["fid"]) and all(point["fid"] < p["fid"] for p in self.points
                                                   if math.isfinite(p["fid"]))
        self.points.append(point)
        self.seconds_spent += time.perf_counter() - start
        return point, best

    def summary(self):
        """What summary.json records: the curve, the best point and the time to each FID milestone."""
        finite = [p for p in self.points if math.isfinite(p["fid"])]
        best = min(finite, key=lambda p: p["fid"]) if finite else None
        reached = {}
        for threshold in FID_MILESTONES:
            first = next((p for p in self.points if math.isfinite(p["fid"]) and p["fid"] <= threshold), None)
            reached[f"fid_<={threshold}"] = None if first is None else first["train_seconds"]
        return {"fid_curve": self.points, "best_fid": best and best["fid"],
                "best_fid_iteration": best and best["iteration"], "seconds_to_fid": reached,
                "fid_tracking_seconds": round(self.seconds_spent, 3)}
