"""Image folders: root/*.png (unlabelled) or root/<class>/**/*.png (labels from the sorted class names)."""
import numpy as np

from ._common import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _images_in(folder, recursive):
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith("."))


def load_folder(path, channels, image_size):
    """(uint8 (N, H, W, C) pixels, labels or None, class names or None) from an image folder."""
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
