"""Scoring a trained generator: the real reference sets, the end-of-run scores (FID and every other metric, each
beside its real floor; class shares and accuracy for digits; mode coverage for 2-D mixtures), a checkpoint's
scores, and FID tracked during training. Sampling itself is engine.sampling."""

import math
import time
from pathlib import Path

import torch

from ..checkpoint import load_generator
from ..data import MIXTURE_STD, MIXTURES, DataError, Dataset, load_dataset, mixture_centers, to_unit_range
from ..sampling import generate
from .classifier import DIGIT_DATASETS, class_accuracy_of, class_shares_of, digit_backbone_note


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
    from .backbones import check_backbone

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
    from .fid import FIDScorer

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
    if digit_backbone_note(cfg.fid_backbone, cfg.dataset):  # digit features on other images: say so beside them
        out["fid_backbone_note"] = digit_backbone_note(cfg.fid_backbone, cfg.dataset)
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


def score_checkpoint(ckpt_path, n_samples=2000, use_ema=True, device="cpu", metrics="fid", backbone=None,
                     inception_weights=None):
    """A checkpoint's generator scored as at the end of its run (evaluate_generator), with ``metrics``; ``backbone``
    and ``inception_weights``, when given, replace the run's own --fid-backbone and --inception-weights."""
    G, cfg, num_classes = load_generator(ckpt_path, device, use_ema)
    if backbone is not None:
        cfg.fid_backbone = backbone
    if inception_weights is not None:
        cfg.inception_weights = inception_weights
    return evaluate_generator(G, cfg, num_classes, device, n_samples, metrics=metrics)


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

    def state(self):
        """What a checkpoint carries of the tracking so far (plain values), so a resumed run keeps its curve and
        its best point: without it the first point after a resume would count as the best."""
        return {"points": [dict(p) for p in self.points], "seconds_spent": self.seconds_spent}

    def restore(self, state):
        """Continue from ``state()`` as a checkpoint saved it; None (a checkpoint without it) starts afresh."""
        if state:
            self.points = [dict(p) for p in state["points"]]
            self.seconds_spent = float(state["seconds_spent"])

    def due(self, iteration, train_seconds):
        return iteration % self.cfg.fid_every == 0 and self.seconds_spent <= self.cfg.fid_budget * train_seconds

    def score(self, G, iteration, train_seconds):
        """Score G now; returns the point (iteration, train_seconds, fid, precision, recall, classes found) and
        whether it is the best. One backbone pass over the samples feeds every figure."""
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
