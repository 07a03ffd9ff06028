"""MNIST IDX files (also Fashion-MNIST, KMNIST: the same format), plain or gzipped."""
import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from ._common import DataError, check_labels, single_split

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
        labels = check_labels(labels, images.shape[0], labels_path)
    return images[..., None], labels


def load_mnist_idx(path, split):
    """(images (N, H, W, 1), labels or None) from a folder of IDX files or one images file."""
    if path.is_file():  # a direct path to an images file; its labels file is found by name when present
        single_split("mnist-idx", path, split)
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
