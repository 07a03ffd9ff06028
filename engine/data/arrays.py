"""Arrays: .npy (images) or .npz (images/x, optional labels/y), never unpickled."""
import contextlib
import zipfile
import zlib

import numpy as np

from ._common import DataError, check_labels

# a damaged .npz raises zipfile's and zlib's own errors besides the usual ones
_ARRAY_FILE_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def load_arrays(path):
    """(images (N, H, W, C), labels or None) from an .npy or .npz file."""
    if path.suffix not in (".npy", ".npz"):
        raise DataError(f"dataset 'npy': {path} should end in .npy or .npz")
    with contextlib.suppress(OSError), open(path, "rb") as f:
        head = f.read(6)
        if head[:6] != b"\x93NUMPY" and head[:4] != b"PK\x03\x04":  # NumPy's signature, or a zip (.npz)
            raise DataError(f"{path}: not a NumPy array file (it starts with neither NumPy's signature nor a zip "
                            "archive's); save it with numpy.save or numpy.savez")
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
        labels = check_labels(labels, images.shape[0], path)
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
