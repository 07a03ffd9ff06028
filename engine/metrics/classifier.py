"""The embedded digit classifier: its network, its committed weights (checked by SHA-256), and what it reads in a
set of images (the share of each class, the accuracy on the classes asked for).

Its penultimate features are the default FID backbone (engine.metrics.backbones); the augmentation study trains
the same network from scratch on other labelled images; editing uses its features as a perceptual loss.
"""
import hashlib
import io
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import FIDError

ASSETS = Path(__file__).resolve().parent / "assets"
MNIST_CLASSIFIER_PATH = ASSETS / "mnist_classifier.pt"
# printed by `python -m ganforge.engine.metrics.train_classifier`; any other file is refused
MNIST_CLASSIFIER_SHA256 = "1885cb575467aae8b692666c1f837b439778151d408dfc6702dc9e6087f141fa"
REGENERATE = "python -m ganforge.engine.metrics.train_classifier --out engine/metrics/assets/mnist_classifier.pt"

DIGIT_DATASETS = ("mnist5k", "mnist-idx")  # where the embedded digit classifier can judge classes
# What summary.json and `ganforge score` say when the digit classifier scored other images (fid_backbone_note).
DIGIT_BACKBONE_NOTE = ("the scores use --fid-backbone mnist, a digit classifier trained on 28x28 grey digits, on "
                       "{dataset} images it was not trained on: they compare runs on the same data at best, not image "
                       "quality; for meaningful scores use --fid-backbone inception --inception-weights FILE")

# A class counts as found when it holds at least this fraction of a uniform share (2.5% of samples for 10).
FOUND_FRACTION_OF_UNIFORM = 0.25


def digit_backbone_note(backbone, dataset):
    """The note for scores of ``dataset``'s images by ``backbone``, or None when the backbone describes them: the
    digit classifier ("mnist") scores only digits (DIGIT_DATASETS). A CelebA model scored with it got FID 0.27 and
    an Inception Score of 1.0 after 2 iterations. Such runs are not refused: the README's own CIFAR-10 command and
    docs/applications.md's CelebA command train with the default backbone."""
    if backbone != "mnist" or dataset in DIGIT_DATASETS:
        return None
    return DIGIT_BACKBONE_NOTE.format(dataset=dataset)


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
                       "MNIST_CLASSIFIER_SHA256 in engine/metrics/classifier.py")
    with torch.device("meta"):  # no random initialisation: the weights come from the file, the RNG stays untouched
        model = MNISTClassifier()
    model.load_state_dict(torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True), assign=True)
    return model.to(device).eval()


@torch.no_grad()
def predict_classes(classifier, images, batch_size=500):
    """The classifier's class for each image, on the CPU."""
    classifier.eval()
    device = next(classifier.parameters()).device
    return torch.cat([classifier(images[i:i + batch_size].to(device)).argmax(dim=1).cpu()
                      for i in range(0, images.shape[0], batch_size)])


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
