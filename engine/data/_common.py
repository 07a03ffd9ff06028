"""What every format shares: the Dataset record, DataError, and the conversion steps after a file is parsed."""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

SPLITS = ("train", "test", "all")


class DataError(ValueError):
    """A dataset is missing, malformed or unsuitable; the message says which file and what was expected."""


@dataclass
class Dataset:
    # As held in memory (and on the training device): uint8 (N, C, H, W) pixels 0..255 for integer sources,
    # float32 (N, C, H, W) in [-1, 1] for float sources, or float32 (N, 2) points. `images` gives floats.
    pixels: torch.Tensor
    labels: torch.Tensor | None        # int64 (N,), or None when unlabelled
    num_classes: int                   # 0 when unlabelled
    name: str
    path: str | None = None            # where it was read from (None for built-in data)
    class_names: tuple | None = None   # folder datasets: the class subfolder names, in label order
    attributes: torch.Tensor | None = None  # int8 (N, A) of -1/1 (CelebA), or None
    attribute_names: tuple | None = None

    @property
    def images(self):
        """Every image as float32 in [-1, 1] (a float copy of uint8 pixels: for a few thousand rows, not a big set;
        index `pixels` first and convert with `to_unit_range` there)."""
        return to_unit_range(self.pixels)

    @property
    def data_shape(self):
        return tuple(self.pixels.shape[1:])

    def __len__(self):
        return self.pixels.shape[0]


def to_unit_range(pixels):
    """uint8 pixels 0..255 -> float32 in [-1, 1]; float pixels (already in [-1, 1]) pass through.

    The training steps call it on each gathered batch, so uint8 data is held at a quarter of float32's size and
    yields the same floats, bit for bit, as converting the whole set first."""
    if pixels.dtype == torch.uint8:
        return pixels.float() / 127.5 - 1
    return pixels


def to_uint8(images):
    """float32 in [-1, 1] -> uint8 0..255, rounded to the nearest level (the inverse of to_unit_range on them)."""
    return ((images + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def require_labels(dataset):
    """Fail early when a conditional model is asked to train on unlabelled data."""
    if dataset.labels is None or dataset.num_classes < 1:
        where = f" at {dataset.path}" if dataset.path else ""
        raise DataError(
            f"a conditional model needs labels, but dataset {dataset.name!r}{where} has none "
            "(label a 'folder' dataset with class subfolders, give an 'npy' dataset a labels/y array, "
            "or train an unconditional model)")
    return dataset


def single_split(name, source, split):
    """Formats that hold one set (a folder, an array file, one IDX file) have no test split."""
    if split == "test":
        raise DataError(f"dataset {name!r} at {source} is one set with no test split; "
                        "point the path at your test data and use split 'train' or 'all'")


def attribute_names_for(spec, dataset):
    """The attribute names ``spec`` asks for ("Smiling,Male,Eyeglasses" or "all"), checked against the dataset's."""
    available = dataset.attribute_names or ()
    if dataset.attributes is None or not available:
        where = f" at {dataset.path}" if dataset.path else ""
        raise DataError(f"--condition-on reads per-image attributes, but dataset {dataset.name!r}{where} has none "
                        "(CelebA's list_attr_celeba.txt gives 40; use --conditional for class labels)")
    if spec.strip() == "all":
        return tuple(available)
    names = tuple(name.strip() for name in spec.split(",") if name.strip())
    if not names:
        raise DataError(f"--condition-on {spec!r} names no attribute; give comma-separated names or all")
    unknown = [name for name in names if name not in available]
    if unknown:
        raise DataError(f"--condition-on: {', '.join(unknown)} not among the attributes of {dataset.name!r} "
                        f"({', '.join(available)})")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataError(f"--condition-on names {', '.join(repeated)} more than once")
    return names


def attribute_vectors(dataset, names):
    """float32 (N, len(names)) of -1/1: the dataset's attributes ``names``, in that order."""
    missing = [name for name in names if name not in (dataset.attribute_names or ())]
    if dataset.attributes is None or missing:
        raise DataError(f"dataset {dataset.name!r} lacks the attributes {', '.join(missing or names)} the model is "
                        "conditioned on")
    columns = [dataset.attribute_names.index(name) for name in names]
    return dataset.attributes[:, columns].float()


def num_classes(labels):
    return 0 if labels is None or len(labels) == 0 else int(labels.max()) + 1


MAX_CLASSES = 100_000  # ImageNet-21k has 21,841; beyond this a label is a mistake, not a class


def check_labels(labels, n_images, source):
    """Labels must be one non-negative integer per image."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"{source}: labels must be one number per image (1-D), got shape {labels.shape}")
    if labels.shape[0] != n_images:
        raise DataError(f"{source}: {labels.shape[0]} labels for {n_images} images; expected one label "
                        "per image")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise DataError(f"{source}: labels must be whole numbers (class indices)")
    elif labels.dtype.kind not in "iub":
        raise DataError(f"{source}: labels must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise DataError(f"{source}: labels must be class indices >= 0, found {labels.min()}")
    if labels.size and labels.max() >= max(MAX_CLASSES, 1):
        raise DataError(f"{source}: labels must be class indices 0..K-1 with K at most {MAX_CLASSES:,}, found "
                        f"{labels.max():,} (a conditional model holds one embedding row per class)")
    return labels


_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def to_nchw(images, source):
    """(N, H, W, C) pixels -> (N, C, H, W): uint8 0..255 for integer sources, float32 in [-1, 1] for float ones.

    Ranges: uint8 (or any integer type) 0..255; floats in [0, 1] or in [-1, 1]. A float array whose values
    all lie in [0, 1] is read as [0, 1]. Integer pixels stay integers (a quarter of float32's memory); the steps
    convert each batch with to_unit_range.

    uint8 pixels are not copied: the result is a view of ``images``' memory, (N, C, H, W) with channels-last
    strides when they are stored (N, H, W, C). Each image stays one contiguous block either way.
    """
    if images.shape[0] == 0:
        raise DataError(f"{source}: the dataset holds no images")
    x = torch.from_numpy(images if all(stride >= 0 for stride in images.strides) else np.ascontiguousarray(images))
    if x.dtype == torch.bool or not (x.is_floating_point() or x.dtype in _INT_DTYPES):
        raise DataError(f"{source}: pixels must be integers 0..255 or floats, got dtype {images.dtype}")
    if x.is_floating_point():
        x = x.float()
        bad = ~torch.isfinite(x)
        if bad.any():
            first = int(bad.reshape(bad.shape[0], -1).any(dim=1).nonzero()[0])
            raise DataError(f"{source}: pixels contain NaN or Inf (first in image {first}); "
                            "expected finite values")
        lo, hi = float(x.min()), float(x.max())
        if lo >= 0.0 and hi <= 1.0:
            x = x * 2 - 1
        elif not (lo >= -1.0 and hi <= 1.0):
            raise DataError(f"{source}: float pixels span [{lo:g}, {hi:g}]; expected [0, 1] or [-1, 1] "
                            "(or uint8 0..255)")
    elif x.dtype != torch.uint8:
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{source}: integer pixels span [{lo}, {hi}]; expected 0..255")
        x = x.to(torch.uint8)
    return x.permute(0, 3, 1, 2)


def convert_channels(x, channels):
    """Grey <-> colour; uint8 pixels stay uint8 (grey from colour is rounded to the nearest level)."""
    c = x.shape[1]
    if c not in (1, 3):
        raise DataError(f"images have {c} channels; expected 1 (grey) or 3 (RGB)")
    if channels is None or channels == c:
        return x
    if channels == 3:
        return x.expand(-1, 3, -1, -1)
    # ITU-R 601 luma, the same weights Pillow uses for RGB -> L
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    grey = (to_unit_range(x) * weights).sum(dim=1, keepdim=True)
    return to_uint8(grey) if x.dtype == torch.uint8 else grey


def resize(x, size, chunk=2048):
    """Bilinear resize with antialiasing, in float chunks (the temporaries stay small on big sets); uint8 pixels
    are rounded back to uint8, as an image file written at the new size would be."""
    if x.shape[-2:] == (size, size):
        return x
    out = torch.empty(x.shape[0], x.shape[1], size, size, dtype=x.dtype)
    for i in range(0, x.shape[0], chunk):
        resized = F.interpolate(to_unit_range(x[i:i + chunk]), size=(size, size), mode="bilinear",
                                align_corners=False, antialias=True).clamp_(-1, 1)
        out[i:i + chunk] = to_uint8(resized) if x.dtype == torch.uint8 else resized
    return out
