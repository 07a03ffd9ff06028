"""Datasets: the embedded MNIST-5k digits, 2-D Gaussian mixtures, and user data on disk.

Every loader returns a `Dataset` whose pixels are uint8 (N, C, H, W) when the source holds integers (MNIST, CIFAR-10,
image files, integer arrays: a quarter of float32's memory, on the host and on the training device) or float32 in
[-1, 1] when it holds floats, and float32 (N, 2) points for the mixtures; `Dataset.images` and `to_unit_range`
give the float32 [-1, 1] images a tanh generator is compared with. Nothing is downloaded. Every problem with the data
raises `DataError` before training starts, with one message that names the file and what was expected.

One module per format parses its files into pixels and labels; `load_dataset` checks the arguments, picks the
module and applies the shared conversion steps (engine.data._common).
"""
import os
from pathlib import Path

import torch

from ._common import SPLITS, DataError, Dataset, attribute_names_for, attribute_vectors, require_labels
from ._common import convert_channels, num_classes, resize, single_split, to_nchw, to_uint8, to_unit_range
from .arrays import load_arrays
from .celeba import load_celeba
from .cifar10 import load_cifar10
from .folder import IMAGE_EXTENSIONS, load_folder
from .idx import load_mnist_idx, read_idx
from .mixtures import MIXTURE_STD, MIXTURES, load_mixture, mixture_centers
from .mnist5k import MNIST5K_TEST_PER_CLASS, load_mnist5k, mnist5k_split_indices

DATASETS = ("mnist5k",) + MIXTURES + ("mnist-idx", "cifar10", "celeba", "folder", "npy")

__all__ = ["DATASETS", "SPLITS", "MIXTURES", "MIXTURE_STD", "IMAGE_EXTENSIONS", "MNIST5K_TEST_PER_CLASS",
           "DataError", "Dataset", "load_dataset", "require_labels", "attribute_names_for", "attribute_vectors",
           "mixture_centers", "mnist5k_split_indices", "read_idx", "to_uint8", "to_unit_range"]


def load_dataset(name="mnist5k", path=None, *, split="train", image_size=None, channels=None, seed=0,
                 n_points=10_000):
    """Load dataset `name` (one of DATASETS).

    split: "train", "test" or "all". Only datasets that ship a split (mnist5k, an MNIST IDX folder, CIFAR-10,
        CelebA: its val partition is in "all" only) have a test split; a single folder or array file is all "train".
    image_size: resize images to image_size x image_size (bilinear with antialiasing), e.g. 28 -> 32 or 64; CelebA's
        faces are center-cropped to squares first and default to 64.
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

    if name in MIXTURES:
        if image_size is not None or channels is not None:
            raise DataError(f"dataset {name!r} is 2-D points: image_size and channels do not apply")
        return load_mixture(name, split, seed, n_points)
    attributes = attribute_names = None  # per-image attributes: CelebA's
    if name == "mnist5k":
        (images, labels), source = load_mnist5k(split), None
        classes, class_names = 10, None
    else:
        if path is None:
            raise DataError(f"dataset {name!r} reads files from disk: give a path (--data-path)")
        source = str(path)
        if not os.path.exists(source):
            raise DataError(f"dataset {name!r}: path {source} does not exist")
        class_names = None
        if name == "mnist-idx":
            images, labels = load_mnist_idx(Path(source), split)
        elif name == "cifar10":
            images, labels = load_cifar10(Path(source), split)
        elif name == "celeba":
            images, attributes, attribute_names = load_celeba(Path(source), split, channels, image_size)
            labels, attributes = None, torch.from_numpy(attributes)
        elif name == "folder":
            single_split(name, source, split)
            images, labels, class_names = load_folder(Path(source), channels, image_size)
        else:
            single_split(name, source, split)
            images, labels = load_arrays(Path(source))
        classes = 10 if name == "cifar10" else num_classes(labels)

    images = to_nchw(images, source or name)
    images = convert_channels(images, channels)
    if image_size is not None:
        images = resize(images, image_size)
    labels = None if labels is None else torch.as_tensor(labels, dtype=torch.int64)
    return Dataset(held_once(images), labels, classes if labels is not None else 0, name, source, class_names,
                   attributes, attribute_names)


def held_once(pixels):
    """The pixels as they lie when they are dense, (N, C, H, W) or channels-last (N, H, W, C) in memory: a big set is
    held once, not copied into the other layout. Only a view that repeats memory (grey expanded to colour) is made
    whole."""
    if pixels.is_contiguous() or pixels.is_contiguous(memory_format=torch.channels_last):
        return pixels
    return pixels.contiguous()
