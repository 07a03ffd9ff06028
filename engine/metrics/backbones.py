"""The networks whose features every metric reads, one pass per image set.

"mnist" (default): the penultimate features of the embedded digit classifier (engine.metrics.classifier), trained
    on the MNIST-5k train split, whose weights ship in engine/metrics/assets/ (about 400 KB). Works offline, fast
    on a CPU; numbers are comparable between runs of this project, not with published Inception FIDs.
"inception": the standard Inception-v3 pool features (2048-d). Needs the torch-fidelity package and a local
    copy of its weights file; nothing is downloaded.

Images given to a backbone are float (N, C, H, W) in [-1, 1], the generator's range.
"""
import hashlib
import importlib.util
import os
from typing import NamedTuple

import torch
from torch import nn
from torchmetrics.image.fid import NoTrainInceptionV3

from .classifier import MNIST_CLASSIFIER_SHA256, load_mnist_classifier
from .errors import FIDError

INCEPTION_WEIGHTS_HINT = (
    "the Inception-v3 FID weights torch-fidelity uses, weights-inception-2015-12-05-6726825d.pth "
    "(release v0.2.0 of github.com/toshas/torch-fidelity), copied onto this machine")


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
