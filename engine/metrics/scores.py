"""Every metric of a generator from one pass of backbone features per image set.

    fid        Frechet distance of the features (torchmetrics FrechetInceptionDistance)
    kid        kernel inception distance, polynomial kernel, mean and std over subsets (torchmetrics)
    is         inception score of the generated set from the backbone's class logits (torchmetrics)
    pr         improved precision and recall, k = 3 (Kynkaanniemi et al. 2019)
    dc         density and coverage, k = 5 (Naeem et al. 2020)
    mifid      memorisation-informed FID: FID over the mean nearest cosine distance to the training images when it
               is below 0.1 (torchmetrics; the Kaggle "Generative Dog Images" rule)
    intra-fid  FID of each class's samples against that class's real images, and their mean (conditional models)

and one measure in pixels, not features: isolated_pixels, the mean count per image of ink pixels with no ink among
their 8 neighbours (the MLP generator's salt noise), for grey images.

Precision, recall, density and coverage are this project's code, written from the papers' definitions (strict
inequalities, as the authors' released code has them): a sample lies on a set's manifold when it is closer to
some point of the set than that point's k-th nearest neighbour within the set. The pairwise distances are
computed a block of rows at a time (at most DISTANCE_BLOCK elements), on the features' device, so memory stays
bounded at 50,000 samples. Every random draw (KID's subsets, IS's split order) comes from a fixed seed on a
forked RNG: scores repeat exactly and never move the training RNG.
"""
import hashlib
import os
import sys
import warnings
from contextlib import contextmanager, suppress
from pathlib import Path

import torch
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.image.mifid import MemorizationInformedFrechetInceptionDistance

from .backbones import Features, Precomputed
from .errors import FIDError
from .fid import frechet_distance

DISTANCE_BLOCK = 1 << 24  # elements of one block of pairwise distances (64 MB in fp32, 128 MB in fp64)
PR_K, DC_K = 3, 5
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
IS_SPLITS = 10
MIFID_EPS = 0.1
METRIC_SEED = 0


# -- pixels -------------------------------------------------------------------------------------------------------
INK_THRESHOLD = -0.5  # a pixel of a [-1, 1] image is ink above this (a quarter of full intensity)


def isolated_pixels(images, threshold=INK_THRESHOLD):
    """Mean number per image of isolated ink pixels: above ``threshold`` with none of their 8 neighbours above it
    (pixels beyond the border count as blank). Grey (N, 1, H, W) images in [-1, 1]."""
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"isolated_pixels counts in grey images (N, 1, H, W), got shape {tuple(images.shape)}")
    ink = (images.float() > threshold).float()
    around = torch.nn.functional.conv2d(ink, torch.ones(1, 1, 3, 3, device=ink.device), padding=1) - ink
    return float(((ink > 0) & (around == 0)).sum() / images.shape[0])


# -- nearest-neighbour manifolds ----------------------------------------------------------------------------------

def _distance_blocks(a, b):
    """(first row, distances of a block of a's rows to every row of b), blocks of at most DISTANCE_BLOCK elements."""
    rows = max(1, DISTANCE_BLOCK // max(1, b.shape[0]))
    for start in range(0, a.shape[0], rows):
        yield start, torch.cdist(a[start:start + rows], b)


def kth_neighbour_radii(x, k):
    """Each row's distance to its k-th nearest other row of x (the row itself, at distance 0, not counted)."""
    if x.shape[0] <= k:
        raise FIDError(f"a k = {k} nearest-neighbour manifold needs more than {k} samples, got {x.shape[0]}")
    radii = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for start, d in _distance_blocks(x, x):
        radii[start:start + d.shape[0]] = d.kthvalue(k + 1, dim=1).values
    return radii


def manifold_hits(points, centres, radii):
    """For each point: how many of the centres' balls (radius ``radii``) hold it; for each centre: whether any
    point lies in its ball."""
    counts = torch.zeros(points.shape[0], dtype=torch.long, device=points.device)
    covered = torch.zeros(centres.shape[0], dtype=torch.bool, device=points.device)
    for start, d in _distance_blocks(points, centres):
        inside = d < radii[None, :]
        counts[start:start + d.shape[0]] = inside.sum(dim=1)
        covered |= inside.any(dim=0)
    return counts, covered


def precision_recall(real, fake, k=PR_K):
    """Improved precision (the share of fakes on the real manifold) and recall (the share of reals on the fake
    manifold), each manifold the union of k-th-nearest-neighbour balls."""
    fake = fake.to(real.device, real.dtype)
    on_real, _ = manifold_hits(fake, real, kth_neighbour_radii(real, k))
    on_fake, _ = manifold_hits(real, fake, kth_neighbour_radii(fake, k))
    return {"improved_precision": float((on_real > 0).double().mean()),
            "improved_recall": float((on_fake > 0).double().mean())}


def density_coverage(real, fake, k=DC_K):
    """Density: the mean number of real k-NN balls holding a fake, over k (about 1 for matching sets, above 1 where
    fakes crowd dense real regions). Coverage: the share of real points whose ball holds at least one fake."""
    fake = fake.to(real.device, real.dtype)
    counts, covered = manifold_hits(fake, real, kth_neighbour_radii(real, k))
    return {"density": float(counts.double().sum() / (k * fake.shape[0])),
            "coverage": float(covered.double().mean())}


# -- torchmetrics' metrics on precomputed features ----------------------------------------------------------------

@contextmanager
def _seeded():
    """A forked RNG seeded with METRIC_SEED: the metrics' subsets repeat, the caller's RNG does not move."""
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
        torch.manual_seed(METRIC_SEED)
        yield


@contextmanager
def _features_held_quietly():
    """KID and IS warn that they keep every feature in memory: here they are handed features already."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features", category=UserWarning)
        yield


def kernel_inception_distance(real, fake):
    """(KID mean, std) over KID_SUBSETS subsets of min(KID_SUBSET_SIZE, both set sizes) samples."""
    size = min(KID_SUBSET_SIZE, real.shape[0], fake.shape[0])
    with _features_held_quietly():
        metric = KernelInceptionDistance(feature=Precomputed(real.shape[1]), subsets=KID_SUBSETS, subset_size=size,
                                         normalize=False, sync_on_compute=False).to(real.device)
    metric.update(real, real=True)
    metric.update(fake.to(real.device), real=False)
    with _seeded():
        mean, std = metric.compute()
    return float(mean), float(std)


def inception_score(logits):
    """(IS mean, std) over IS_SPLITS splits of the backbone's class logits."""
    with _features_held_quietly():
        metric = InceptionScore(feature=Precomputed(logits.shape[1]), splits=min(IS_SPLITS, logits.shape[0]),
                                sync_on_compute=False).to(logits.device)
    metric.update(logits)
    with _seeded():
        mean, std = metric.compute()
    return float(mean), float(std)


def memorization_informed_fid(train, fake):
    """MiFID of the fakes against the training images (what a generator could have memorised)."""
    metric = MemorizationInformedFrechetInceptionDistance(feature=Precomputed(train.shape[1]), normalize=False,
                                                          cosine_distance_eps=MIFID_EPS,
                                                          sync_on_compute=False).to(train.device)
    metric.update(train, real=True)
    metric.update(fake.to(train.device), real=False)
    return float(metric.compute())


def intra_class_fid(real, real_labels, fake, fake_labels, num_classes):
    """{"intra_fid": mean over classes, "intra_fid_per_class": [FID of class c's fakes against class c's reals]}."""
    per_class = []
    for c in range(num_classes):
        r, f = real[real_labels.to(real.device) == c], fake[fake_labels.to(fake.device) == c]
        per_class.append(frechet_distance(r, f) if r.shape[0] >= 2 and f.shape[0] >= 2 else float("nan"))
    finite = [v for v in per_class if v == v]
    return {"intra_fid": sum(finite) / len(finite) if finite else float("nan"), "intra_fid_per_class": per_class}


def score_features(metrics, real, fake, train=None, real_labels=None, fake_labels=None, num_classes=0):
    """The metrics named in ``metrics`` of the fake Features against the real (held-out) Features.

    train: Features of the training images (MiFID's memorisation reference; without it MiFID is skipped).
    real_labels / fake_labels / num_classes: for intra-class FID (skipped without them)."""
    out = {}
    require_finite(real, "the real images")
    if train is not None:
        require_finite(train, "the training images")
    if not torch.isfinite(fake.pool).all():  # a diverged generator: nothing to score, and nothing wrong with us
        return {name: float("nan") for name in _keys(metrics)}
    if "fid" in metrics:
        out["fid"] = frechet_distance(real.pool, fake.pool)
    if "kid" in metrics:
        out["kid"], out["kid_std"] = kernel_inception_distance(real.pool, fake.pool)
    if "is" in metrics:
        out["inception_score"], out["inception_score_std"] = inception_score(fake.logits)
    if "pr" in metrics:
        out.update(precision_recall(real.pool, fake.pool))
    if "dc" in metrics:
        out.update(density_coverage(real.pool, fake.pool))
    if "mifid" in metrics and train is not None:
        out["mifid"] = memorization_informed_fid(train.pool, fake.pool)
    if "intra-fid" in metrics and num_classes and real_labels is not None and fake_labels is not None:
        out.update(intra_class_fid(real.pool, real_labels, fake.pool, fake_labels, num_classes))
    return out


def _keys(metrics):
    keys = {"fid": ["fid"], "kid": ["kid", "kid_std"], "is": ["inception_score", "inception_score_std"],
            "pr": ["improved_precision", "improved_recall"], "dc": ["density", "coverage"], "mifid": ["mifid"],
            "intra-fid": ["intra_fid"]}
    return [k for m in metrics for k in keys[m]]


# -- real features, cached per image set and backbone -------------------------------------------------------------

def cache_dir():
    """Where real-set features are kept: $GANFORGE_CACHE, else ~/.cache/ganforge."""
    return Path(os.environ.get("GANFORGE_CACHE") or Path.home() / ".cache" / "ganforge") / "features"


def images_digest(images):
    """SHA-256 of a set's pixels (float32, contiguous) and shape: changes whenever the set does."""
    array = images.detach().to("cpu", torch.float32).contiguous().numpy()
    digest = hashlib.sha256(repr(tuple(array.shape)).encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def cached_features(scorer, images, cache=True):
    """The Features of a whole real set through ``scorer`` (a FIDScorer), read from the cache when its key (the
    set's digest and the backbone's key) is there, else computed and written. The cache is an optimisation: an
    entry that cannot be read or does not hold this set's features is removed and recomputed, and a write that
    fails (a full disk, a read-only folder) is skipped, each with one line on stderr. Under torchrun each rank
    featurises its rows and the features are gathered (no cache)."""
    if scorer.world.launched:
        return require_finite(scorer.features(images[scorer.world.rows(len(images))]), "the real images")
    if not cache:
        return require_finite(scorer.features(images), "the real images")
    path = cache_dir() / f"{scorer.backbone.key}-{images_digest(images)[:32]}.pt"
    features = _read_cache_entry(path, scorer, images)
    if features is None:
        features = require_finite(scorer.features(images), "the real images")
        _write_cache_entry(path, features)
    return features


def require_finite(features, what):
    """``features``, or a one-line FIDError where any is NaN or inf: the distances and covariances below would
    be meaningless, and the LAPACK routines under them crash the process on NaN."""
    for name, values in (("pool", features.pool), ("logits", features.logits)):
        if not torch.isfinite(values).all():
            raise FIDError(f"the backbone's {name} features of {what} are not finite (NaN or inf): the images hold "
                           "NaN or inf pixels, so there is nothing to score")
    return features


def _read_cache_entry(path, scorer, images):
    """The Features cached at ``path`` for ``images``, or None: absent, or bad (then removed, with one line)."""
    try:
        saved = torch.load(path, map_location=scorer.device, weights_only=True)
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 -- partial, foreign or corrupt: whatever torch.load raises
        problem = f"unreadable: {type(exc).__name__}"
    else:
        problem = _cache_entry_problem(saved, len(images), _feature_widths(scorer, images))
    if problem is None:
        return Features(saved["pool"], saved["logits"])
    with suppress(OSError):
        path.unlink()
    print(f"{path}: dropped a bad feature cache entry ({problem}); recomputing the features", file=sys.stderr)
    return None


def _feature_widths(scorer, images):
    """(pool width, logits width) of the backbone's features: one image's, computed here."""
    probe = scorer.backbone.extract(images[:1])
    return probe.pool.shape[1], probe.logits.shape[1]


def _cache_entry_problem(saved, rows, widths):
    """What is wrong with a loaded cache entry for ``rows`` images of feature ``widths``, or None."""
    if not isinstance(saved, dict) or set(saved) != {"pool", "logits"}:
        return "not a dict of pool and logits"
    for (name, values), width in zip((("pool", saved["pool"]), ("logits", saved["logits"])), widths):
        if not isinstance(values, torch.Tensor):
            return f"{name} is a {type(values).__name__}, not a tensor"
        if values.dtype != torch.float64:
            return f"{name} is {values.dtype}, not torch.float64"
        if tuple(values.shape) != (rows, width):
            return f"{name} has shape {tuple(values.shape)}, not {(rows, width)}"
        if not torch.isfinite(values).all():
            return f"{name} holds NaN or inf"
    return None


_UNWRITABLE_ENTRIES = set()  # cache entries whose write failed in this process: tried and reported once


def _write_cache_entry(path, features):
    """Write the cache entry atomically; a failed write is skipped with one line (the features are in hand)."""
    from ..io import atomic_write_torch

    if path in _UNWRITABLE_ENTRIES:
        return
    try:
        atomic_write_torch(path, {"pool": features.pool.cpu(), "logits": features.logits.cpu()})
    except OSError as exc:
        _UNWRITABLE_ENTRIES.add(path)
        print(f"{exc.filename or path}: feature cache not written ({exc.strerror or exc}); the scores are computed "
              "all the same", file=sys.stderr)
