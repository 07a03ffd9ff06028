"""CelebA, the official layout: img_align_celeba/*.jpg, list_attr_celeba.txt and list_eval_partition.txt."""
import os

import numpy as np

from ._common import DataError

NUM_ATTRIBUTES = 40
DEFAULT_IMAGE_SIZE = 64
PARTITIONS = {"train": (0,), "test": (2,), "all": (0, 1, 2)}  # list_eval_partition.txt: 0 train, 1 val, 2 test
_PROGRESS_FROM = 1_000  # more images than this: a progress bar while they are read


def _lines(path):
    """(line number, text) of each non-blank line of a text file."""
    if not path.is_file():
        raise DataError(f"dataset 'celeba': {path} is missing; expected the official CelebA text file "
                        f"{path.name} beside img_align_celeba")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read as text ({err})") from None
    return [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_attributes(path):
    """(file names, int8 (N, 40) attributes of -1/1, attribute names) from list_attr_celeba.txt."""
    lines = _lines(path)
    if not lines:
        raise DataError(f"{path}: the file is empty; expected the number of images, the attribute names and a row "
                        "per image")
    first = lines[0][1].strip()
    if not (first.isascii() and first.isdigit()):
        raise DataError(f"{path}: line {lines[0][0]} is {first[:40]!r}; expected the number of images")
    count = int(first)
    number, header = (lines[1][0], lines[1][1].split()) if len(lines) > 1 else (lines[0][0] + 1, [])
    if len(header) != NUM_ATTRIBUTES:
        raise DataError(f"{path}: line {number} has {len(header)} names; expected the {NUM_ATTRIBUTES} attribute "
                        "names (5_o_Clock_Shadow ... Young)")
    if len(set(header)) != NUM_ATTRIBUTES:
        twice = next(n for i, n in enumerate(header) if n in header[:i])
        raise DataError(f"{path}: line {number} names attribute {twice} twice; expected {NUM_ATTRIBUTES} distinct "
                        "names")
    names, rows, seen = [], [], {}
    for number, line in lines[2:]:
        parts = line.split()
        if len(parts) != NUM_ATTRIBUTES + 1:
            raise DataError(f"{path}: line {number} has {len(parts) - 1} values; expected a file name and "
                            f"{NUM_ATTRIBUTES} values of -1 or 1")
        bad = set(parts[1:]).difference(("-1", "1"))
        if bad:
            raise DataError(f"{path}: line {number} has the value {sorted(bad)[0]!r}; expected -1 or 1")
        if parts[0] in seen:
            raise DataError(f"{path}: line {number} lists {parts[0]} again (first on line {seen[parts[0]]}); "
                            "expected each image once")
        seen[parts[0]] = number
        names.append(parts[0])
        rows.append(bytes(v == "1" for v in parts[1:]))  # 40 bytes a row: the full set stays small while parsing
    if count != len(names):
        raise DataError(f"{path}: line 1 says {count} images but {len(names)} rows follow; expected one row per "
                        "image")
    ones = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(names), NUM_ATTRIBUTES)
    return names, (ones.astype(np.int8) * 2 - 1), tuple(header)


def read_partition(path, names, attr_path):
    """int8 (N,) partition (0 train, 1 val, 2 test) of each image in `names`, from list_eval_partition.txt."""
    partition, seen = {}, {}
    for number, line in _lines(path):
        parts = line.split()
        if len(parts) != 2 or not (parts[1].isascii() and parts[1].isdigit()):
            raise DataError(f"{path}: line {number} is {line.strip()[:60]!r}; expected a file name and a "
                            "partition 0, 1 or 2")
        if parts[1] not in ("0", "1", "2"):
            raise DataError(f"{path}: line {number} puts {parts[0]} in partition {parts[1]}; expected 0 (train), "
                            "1 (val) or 2 (test)")
        if parts[0] in seen:
            raise DataError(f"{path}: line {number} lists {parts[0]} again (first on line {seen[parts[0]]}); "
                            "expected each image once")
        seen[parts[0]] = number
        partition[parts[0]] = int(parts[1])
    lacking = next((n for n in names if n not in partition), None)
    if lacking is not None:
        raise DataError(f"{path}: lacks {lacking}, which {attr_path} lists; expected the same images in both files")
    if len(partition) != len(names):
        known = set(names)
        extra = next(n for n in partition if n not in known)
        raise DataError(f"{path}: lists {extra} (line {seen[extra]}), which {attr_path} does not; expected the "
                        "same images in both files")
    return np.array([partition[n] for n in names], dtype=np.int8)


def load_celeba(path, split, channels, image_size):
    """(uint8 (N, S, S, C) pixels, int8 (N, 40) attributes of -1/1, attribute names) of one split.

    split: "train" (partition 0), "test" (partition 2) or "all" (every image; the val partition 1 is only in "all").
    Images are in the attribute file's order, each center-cropped to a square of its shorter side (178x178 for
    the 178x218 aligned faces), then resized bilinearly to S = image_size (default 64); channels 1 reads grey,
    anything else RGB.
    """
    from PIL import Image, UnidentifiedImageError
    from tqdm import tqdm

    if not path.is_dir():
        raise DataError(f"dataset 'celeba': {path} is not a folder; expected the folder holding img_align_celeba, "
                        "list_attr_celeba.txt and list_eval_partition.txt")
    folder = path / "img_align_celeba"
    if not folder.is_dir():
        raise DataError(f"dataset 'celeba': {path} has no img_align_celeba folder; expected the aligned faces in "
                        f"{folder}")
    if (folder / "img_align_celeba").is_dir():  # how Kaggle's zip extracts
        folder = folder / "img_align_celeba"
    attr_path, part_path = path / "list_attr_celeba.txt", path / "list_eval_partition.txt"
    names, attributes, attribute_names = read_attributes(attr_path)
    partition = read_partition(part_path, names, attr_path)
    keep = np.flatnonzero(np.isin(partition, PARTITIONS[split]))
    if keep.size == 0:
        raise DataError(f"{part_path}: no image is in the {split} split (partition "
                        f"{' or '.join(map(str, PARTITIONS[split]))}); expected at least one")
    files = [names[i] for i in keep]
    on_disk = set(os.listdir(folder))
    missing = [f for f in files if f not in on_disk]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{folder / missing[0]}{more}: listed in {attr_path} but missing; expected every listed "
                        "image in img_align_celeba")

    size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    mode = "L" if channels == 1 else "RGB"
    images = np.empty((len(files), size, size, 1 if mode == "L" else 3), dtype=np.uint8)
    for i, name in enumerate(tqdm(files, desc=f"celeba {split}", unit="img", dynamic_ncols=True,
                                  disable=len(files) <= _PROGRESS_FROM)):
        try:
            with Image.open(folder / name) as img:
                img = img.convert(mode)
                w, h = img.size
                side = min(w, h)
                left, top = (w - side) // 2, (h - side) // 2
                img = img.crop((left, top, left + side, top + side))
                if side != size:  # Pillow's bilinear filter widens its support when shrinking: antialiased
                    img = img.resize((size, size), Image.Resampling.BILINEAR)
                images[i] = np.asarray(img, dtype=np.uint8).reshape(size, size, -1)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
            raise DataError(f"{folder / name}: not a readable image ({err})") from None
    return images, attributes[keep], attribute_names
