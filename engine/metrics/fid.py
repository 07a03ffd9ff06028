"""FID through torchmetrics' FrechetInceptionDistance, on the features of a backbone (engine.metrics.backbones):
the Frechet distance of two feature sets, and a scorer that caches the real set's features.
"""
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from .backbones import Backbone, Features, Precomputed
from .errors import FIDError


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
