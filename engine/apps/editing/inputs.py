"""What an edit works on, checked: a conditional generator, and images with their classes from the model's own
dataset split or from the user's files (one image, an image folder, an .npy/.npz array)."""
from pathlib import Path

import numpy as np
import torch

from ...checkpoint import load_generator
from ...data import DataError, load_dataset
from ...metrics.classifier import predict_classes


class EditError(ValueError):
    """Editing cannot run as asked (wrong checkpoint, class, image shape, missing encoder)."""


def load_conditional_generator(ckpt_path, device="cpu", use_ema=True, kernels="auto"):
    """(G with frozen weights, TrainConfig, num_classes); refuses unconditional and non-image models."""
    G, cfg, num_classes = load_generator(ckpt_path, device, use_ema, kernels)
    if not num_classes and not G.attribute_names:
        raise EditError(f"{ckpt_path} is an unconditional model; editing needs a conditional one "
                        "(ganforge train --conditional, or --condition-on attributes)")
    if len(G.data_shape) != 3:
        raise EditError(f"editing works on images; {ckpt_path} generates {G.data_shape} points")
    G.requires_grad_(False)
    return G, cfg, num_classes


def check_class(label, num_classes, what="class"):
    if not 0 <= label < num_classes:
        raise EditError(f"{what} {label} is out of range: the model has classes 0..{num_classes - 1}")
    return label


def check_images(images, data_shape, source="images"):
    if tuple(images.shape[1:]) != tuple(data_shape):
        c, h, w = data_shape
        got = "x".join(str(s) for s in images.shape[1:])
        raise EditError(f"{source} are {got} (channels x height x width) but the generator makes {c}x{h}x{w}; "
                        "give images of that size and channel count")
    return images


def read_images(path):
    """A single image file, an image folder or an .npy/.npz array: (images in [-1, 1], labels or None)."""
    path = Path(path)
    if not path.exists():
        raise EditError(f"--input {path} does not exist")
    if path.is_dir():
        data = load_dataset("folder", path)
        return data.images, data.labels
    if path.suffix in (".npy", ".npz"):
        data = load_dataset("npy", path)
        return data.images, data.labels
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "RGB"):
                img = img.convert("RGB" if img.mode in ("RGBA", "P", "CMYK") else "L")
            pixels = np.asarray(img, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as exc:
        raise EditError(f"--input {path}: not a readable image ({exc})") from None
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    return torch.from_numpy(pixels).permute(2, 0, 1)[None] / 127.5 - 1, None


def model_split(cfg, split):
    """A split of the model's own dataset, as it trained on it; an EditError that suggests --input if unreadable."""
    try:
        return load_dataset(cfg.dataset, cfg.data_path, split=split, image_size=cfg.image_size, channels=cfg.channels)
    except DataError as exc:
        raise EditError(f"{exc}; or give --input images") from None


def edit_inputs(cfg, num_classes, input_path=None, label=None, split="test", count=500, classifier=None,
                judge=True):
    """(images, labels, where from): --input images, else the first ``count`` of the model's dataset split."""
    if input_path is not None:
        images, labels = read_images(input_path)
        source = str(input_path)
    else:
        data = model_split(cfg, split)
        images, labels = data.images[:count], data.labels[:count] if data.labels is not None else None
        source = f"{cfg.dataset} {split} split"
    if label is not None:
        labels = torch.full((len(images),), check_class(label, num_classes, "--label"))
    if labels is None:
        if not judge:
            raise EditError(f"{source}: the images have no labels; give their class with --label")
        labels = predict_classes(classifier, images)  # digits: the classifier reads the source class
    if int(labels.max()) >= num_classes:
        raise EditError(f"{source}: class {int(labels.max())} is out of range: the model has classes "
                        f"0..{num_classes - 1}")
    return images, labels, source
