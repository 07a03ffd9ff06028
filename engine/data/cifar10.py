"""CIFAR-10, python version: pickled dicts with b"data" (N, 3072) uint8 and b"labels", read by a safe unpickler."""
import pickle

import numpy as np

from ._common import DataError, check_labels

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
    labels = check_labels(labels, data.shape[0], path)
    if labels.size and labels.max() > 9:
        raise DataError(f"{path}: labels go up to {labels.max()}; CIFAR-10 labels are 0..9")
    # rows are 1024 red, 1024 green, then 1024 blue values, each plane row-major
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar10(path, split):
    """(uint8 (N, 32, 32, 3) pixels, labels) of one split, from the extracted python-version batches."""
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
