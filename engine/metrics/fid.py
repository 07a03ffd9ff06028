"""FID through torchmetrics' FrechetInceptionDistance, on the features of one of two backbones.

"mnist" (default): the penultimate features of a small digit classifier trained on the MNIST-5k train split,
    whose weights ship in engine/metrics/assets/ (about 400 KB). Works offline, fast on a CPU; numbers are comparable
    between runs of this project, not with published Inception FIDs.
"inception": the standard Inception-v3 pool features (2048-d). Needs the torch-fidelity package and a local
    copy of its weights file; nothing is downloaded.

Images given to the scorer are float (N, C, H, W) in [-1, 1], the generator's range.
"""
import hashlib
import importlib.util
import io
import os
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3

ASSETS = Path(__file__).resolve().parent / "assets"
MNIST_CLASSIFIER_PATH = ASSETS / "mnist_classifier.pt"
# printed by `python -m ganforge.engine.metrics.train_classifier`; any other file is refused
MNIST_CLASSIFIER_SHA256 = "1885cb575467aae8b692666c1f837b439778151d408dfc6702dc9e6087f141fa"
REGENERATE = "python -m ganforge.engine.metrics.train_classifier --out engine/metrics/assets/mnist_classifier.pt"
INCEPTION_WEIGHTS_HINT = (
    "the Inception-v3 FID weights torch-fidelity uses, weights-inception-2015-12-05-6726825d.pth "
    "(release v0.2.0 of github.com/toshas/torch-fidelity), copied onto this machine")


class FIDError(ValueError):
    """FID cannot be computed as configured (missing weights, package, or bad inputs): the CLI's one-line error."""


class MNISTClassifier(nn.Module):
    """Small CNN for 28x28 grey digits in [-1, 1]: three conv blocks, a 128-d feature layer, 10 logits.

    The same network classifies other labelled images too (the augmentation study trains it from scratch):
    ``channels``, ``num_classes`` and ``image_size`` (at least 8) set its input
    and output; the defaults are the committed digit classifier's.
    """

    num_features = 128

    def __init__(self, channels=1, num_classes=10, image_size=28):
        super().__init__()
        if image_size < 8:
            raise ValueError(f"the classifier needs images of at least 8x8 pixels, got {image_size}")
        self.channels, self.num_classes, self.image_size = channels, num_classes, image_size
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 28 -> 14
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),        # 14 -> 7
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),        # 7 -> 3
        )
        self.fc = nn.Linear(64 * (image_size // 8) ** 2, self.num_features)
        self.head = nn.Linear(self.num_features, num_classes)

    def prepare(self, x):
        """Any (N, C, H, W) image batch in [-1, 1] -> the channels and size this network was built for
        (grey 28x28 for the digit classifier)."""
        x = x.float()
        if x.shape[1] != self.channels:
            x = x.mean(dim=1, keepdim=True).expand(-1, self.channels, -1, -1)
        size = (self.image_size, self.image_size)
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return x

    def features(self, x):
        return torch.relu(self.fc(self.conv(self.prepare(x)).flatten(1)))

    def forward(self, x):
        return self.head(self.features(x))


def load_mnist_classifier(device="cpu", path=None):
    """The committed classifier, after checking the file's SHA-256 against MNIST_CLASSIFIER_SHA256."""
    path = Path(path) if path is not None else MNIST_CLASSIFIER_PATH
    if not path.is_file():
        raise FIDError(f"classifier weights {path} are missing; regenerate them with `{REGENERATE}`")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != MNIST_CLASSIFIER_SHA256:
        raise FIDError(f"classifier weights {path} have SHA-256 {digest}, expected {MNIST_CLASSIFIER_SHA256}; "
                       f"regenerate them with `{REGENERATE}` and paste the printed SHA-256 into "
                       "MNIST_CLASSIFIER_SHA256 in engine/metrics/fid.py")
    with torch.device("meta"):  # no random initialisation: the weights come from the file, the RNG stays untouched
        model = MNISTClassifier()
    model.load_state_dict(torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True), assign=True)
    return model.to(device).eval()


class Precomputed(nn.Module):
    """A torchmetrics "feature extractor" for features already computed: the identity, with ``num_features``.

    The backbone runs once per image set (Backbone.extract) and every metric reads its features; torchmetrics'
    FID, KID, IS and MiFID take them through this module. It has no parameters, so it never leaves eval mode."""

    def __init__(self, num_features):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, features):
        return features


def _inception_metric_args(weights):
    """Raise FIDError unless the Inception backbone can be built offline; else its weights path."""
    missing = []
    if weights is None:
        missing.append(f"a local weights file, {INCEPTION_WEIGHTS_HINT}, passed as inception_weights= "
                       "(--inception-weights)")
    elif not os.path.isfile(weights):
        missing.append(f"the weights file {weights} (it does not exist; expected {INCEPTION_WEIGHTS_HINT})")
    if importlib.util.find_spec("torch_fidelity") is None:
        missing.append("the torch-fidelity package (pip install torch-fidelity)")
    if missing:
        raise FIDError("FID with the Inception backbone needs " + " and ".join(missing)
                       + ". Nothing is downloaded at run time. Or use the offline backbone 'mnist'.")
    return str(weights)


def check_backbone(backbone, inception_weights=None):
    """Raise FIDError now if Backbone(backbone, inception_weights) would fail (before a long run, not after)."""
    if backbone == "mnist":
        load_mnist_classifier()
    elif backbone == "inception":
        _inception_metric_args(inception_weights)
    else:
        raise FIDError(f"unknown FID backbone {backbone!r}; expected 'mnist' or 'inception'")


class Features(NamedTuple):
    """A set's backbone features: ``pool`` (N, D) float64 for FID, KID, MiFID, precision/recall and
    density/coverage; ``logits`` (N, K) float64 class logits for the Inception Score."""
    pool: torch.Tensor
    logits: torch.Tensor

    def rows(self, index):
        return Features(self.pool[index], self.logits[index])

    @staticmethod
    def cat(parts):
        return Features(torch.cat([p.pool for p in parts]), torch.cat([p.logits for p in parts]))


class Backbone:
    """The network whose features every metric reads, and a ``key`` that changes when its weights do.

    "mnist": the committed digit classifier (128-d penultimate features, 10 logits), offline and fast on a CPU.
    "inception": Inception-v3 with torch-fidelity's FID weights from a local file (2048-d pool features and the
    1008 unbiased logits of the Inception Score), uint8 RGB in, the reference FID code's resize.
    """

    def __init__(self, name="mnist", inception_weights=None, device="cpu", batch_size=500):
        self.name, self.device, self.batch_size = name, torch.device(device), int(batch_size)
        self.classifier = None
        if name == "mnist":
            self.classifier = load_mnist_classifier(self.device)
            self.key = f"mnist-classifier-{MNIST_CLASSIFIER_SHA256[:16]}"
        elif name == "inception":
            weights = _inception_metric_args(inception_weights)
            # Building it must not draw from the training RNG (Inception initialises before loading its weights).
            with torch.random.fork_rng(devices=[]):
                self.inception = NoTrainInceptionV3(name="inception-v3-compat",
                                                    features_list=["2048", "logits_unbiased"],
                                                    feature_extractor_weights_path=weights, antialias=False)
            self.inception = self.inception.to(self.device).eval()
            self.key = f"inception-{_file_digest(weights)[:16]}"
        else:
            raise FIDError(f"unknown FID backbone {name!r}; expected 'mnist' or 'inception'")

    def _prepare(self, images):
        if images.ndim != 4:
            raise FIDError(f"FID expects images (N, C, H, W), got shape {tuple(images.shape)}")
        if self.name == "inception":  # the Inception extractor wants uint8 RGB
            images = ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
            if images.shape[1] == 1:
                images = images.expand(-1, 3, -1, -1)
        return images

    @torch.no_grad()
    def extract(self, images):
        """Features of ``images`` (N, C, H, W) in [-1, 1], in batches on the backbone's device (kept there)."""
        images = torch.as_tensor(images)
        self._prepare(images[:1])  # shape check before any work
        parts = []
        for i in range(0, images.shape[0], self.batch_size):
            batch = self._prepare(images[i:i + self.batch_size].to(self.device))
            if self.classifier is not None:
                pool = self.classifier.features(batch)
                logits = self.classifier.head(pool)
            else:  # one pass gives both outputs (torchmetrics' own two-output forward)
                pool, logits = self.inception._torch_fidelity_forward(batch)
            parts.append(Features(pool.double(), logits.double()))
        if not parts:
            return Features(torch.zeros(0, 1, dtype=torch.float64), torch.zeros(0, 1, dtype=torch.float64))
        return Features.cat(parts)


def _file_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def frechet_distance(real, fake):
    """FID between two feature sets (N, D), through torchmetrics' FrechetInceptionDistance."""
    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise FIDError(f"FID needs at least 2 images per set, got {real.shape[0]} and {fake.shape[0]}")
    # The features are already every rank's (Backbone features are gathered): no sync of the metric's own.
    metric = FrechetInceptionDistance(feature=Precomputed(real.shape[1]), normalize=False,
                                      sync_on_compute=False).to(real.device)
    metric.update(real, real=True)
    metric.update(fake.to(real.device), real=False)
    return float(metric.compute())


class FIDScorer:
    """FID of generated images against a real set whose features are computed once and cached.

        scorer = FIDScorer()
        scorer.set_real(real_images)
        fid = scorer.score_fake(generated)   # cheap to repeat: only the fake features are computed

    Under torchrun every rank passes its part of the images; the features are gathered, so each rank scores
    all images. ``features(images)`` gives a set's (gathered) features for the other metrics (engine.metrics.scores).
    """

    def __init__(self, backbone="mnist", inception_weights=None, device="cpu", batch_size=500, world=None):
        from ..distributed import World

        self.world = world or World()
        self.backbone = Backbone(backbone, inception_weights, device, batch_size)
        self.classifier = self.backbone.classifier
        self.device = self.backbone.device
        self.real = None

    def features(self, images):
        """This rank's images' features, gathered from every rank (rank order), on the backbone's device."""
        mine = self.backbone.extract(images)
        if not self.world.launched:
            return mine
        return Features(self.world.gather(mine.pool).to(self.device), self.world.gather(mine.logits).to(self.device))

    def set_real(self, real=None, features=None):
        """Replace the cached real set: images (this rank's part), or their already computed ``features``."""
        self.real = features if features is not None else self.features(real)
        if self.real.pool.shape[0] < 2:
            raise FIDError(f"FID needs at least 2 images per set, got {self.real.pool.shape[0]}")

    @property
    def has_real(self):
        return self.real is not None

    def score_fake(self, fake=None, features=None):
        """FID of ``fake`` (or of its ``features``) against the cached real set. A non-finite batch (a diverged G)
        scores nan."""
        if self.real is None:
            raise FIDError("no real images yet: call set_real() first")
        if features is None:
            if self.world.any(not torch.isfinite(fake).all()):  # all ranks skip together
                return float("nan")
            features = self.features(fake)
        if not torch.isfinite(features.pool).all():
            return float("nan")
        return frechet_distance(self.real.pool, features.pool)


@torch.no_grad()
def predict_classes(classifier, images, batch_size=500):
    """The classifier's class for each image, on the CPU."""
    classifier.eval()
    device = next(classifier.parameters()).device
    return torch.cat([classifier(images[i:i + batch_size].to(device)).argmax(dim=1).cpu()
                      for i in range(0, images.shape[0], batch_size)])


# A class counts as found when it holds at least this fraction of a uniform share (2.5% of samples for 10).
FOUND_FRACTION_OF_UNIFORM = 0.25


def class_shares(classifier, images, num_classes=10, batch_size=500):
    """Mode coverage for digit-like data: the share of each class among ``images`` as the classifier reads them.

    Returns {"class_shares": [share of class 0, ...], "classes_found": classes with at least
    FOUND_FRACTION_OF_UNIFORM of the uniform share, "min_class_share", "max_class_share"}.
    """
    return class_shares_of(predict_classes(classifier, images, batch_size), num_classes)


def class_shares_of(preds, num_classes=10):
    """class_shares from the classifier's predicted classes."""
    shares = (torch.bincount(preds, minlength=num_classes).double() / max(len(preds), 1)).tolist()
    found = sum(s >= FOUND_FRACTION_OF_UNIFORM / num_classes for s in shares)
    return {"class_shares": [round(s, 4) for s in shares], "classes_found": int(found),
            "min_class_share": min(shares), "max_class_share": max(shares)}


@torch.no_grad()
def class_accuracy(classifier, images, labels, batch_size=500):
    """How often `classifier` recognises each requested class in `images`: a conditional G's samples, or
    labelled real images (the classifier's own test accuracy).

    Returns {"accuracy": overall fraction, "per_class": {class: fraction}, "num_samples": N}.
    """
    labels = torch.as_tensor(labels).long().cpu()
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    return class_accuracy_of(predict_classes(classifier, images, batch_size), labels)


def class_accuracy_of(preds, labels):
    """class_accuracy from the classifier's predicted classes and the requested ones."""
    labels = torch.as_tensor(labels).long().cpu()
    correct = (preds == labels).float()
    per_class = {int(c): float(correct[labels == c].mean()) for c in labels.unique()}
    return {"accuracy": float(correct.mean()), "per_class": per_class, "num_samples": int(labels.shape[0])}
