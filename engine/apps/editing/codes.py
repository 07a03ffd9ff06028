"""A VAE-GAN's round trip as files: images -> codes.npz (its encoder's q(z | x)) -> images (any checkpoint's
generator on given codes)."""
from pathlib import Path

import numpy as np
import torch

from ...checkpoint import load_generator
from ...data import load_dataset
from ...images import image_arrays, save_samples
from ...io import atomic_write
from ...metrics.classifier import DIGIT_DATASETS
from .encoder import decode, feature_model, require_vaegan
from .inputs import EditError, check_class, check_images, edit_inputs, read_images


@torch.no_grad()
def encode_images(ckpt_path, images, labels=None, use_ema=True, device="cpu", batch_size=500, kernels="auto"):
    """A VAE-GAN checkpoint's encoder on ``images`` (N, C, H, W) in [-1, 1] (and their classes, for a
    conditional model): (mu, log sigma^2) of q(z | x), each (N, z_dim) float32 on the CPU. mu is the code to
    decode; use_ema: the EMA's encoder, which pairs with the EMA's decoder that samples."""
    G, _, num_classes = load_generator(ckpt_path, device, use_ema, kernels)
    require_vaegan(G, ckpt_path)
    check_images(images, G.data_shape)
    if num_classes and labels is None:
        raise EditError(f"{ckpt_path} is conditional: give each image's class")
    parts = [G.encode(images[i:i + batch_size].to(device),
                      labels[i:i + batch_size].to(device) if num_classes else None)
             for i in range(0, len(images), batch_size)]
    return torch.cat([p[0] for p in parts]).cpu(), torch.cat([p[1] for p in parts]).cpu()


@torch.no_grad()
def decode_codes(ckpt_path, z, labels=None, use_ema=True, device="cpu", batch_size=500, kernels="auto",
                 source="codes"):
    """A checkpoint's generator (a VAE-GAN's decoder) on codes ``z`` (N, z_dim): images (N, C, H, W) in [-1, 1],
    float32 on the CPU. ``source`` names the codes in errors (the file they came from)."""
    G, _, num_classes = load_generator(ckpt_path, device, use_ema, kernels)
    check_codes(z, labels if num_classes else None, G.z_dim, source)
    if num_classes:
        if labels is None:
            raise EditError(f"{source}: {ckpt_path} is conditional: give each code's class ('labels')")
        check_class(int(labels.max()), num_classes, f"{source}: class")
        check_class(int(labels.min()), num_classes, f"{source}: class")
    return decode(G, z.float().to(device), labels.to(device) if num_classes else None, batch_size).cpu()


def check_codes(z, labels, z_dim, source="codes"):
    """Codes a generator can decode: ``z`` (N, z_dim) of finite numbers, N >= 1, and ``labels`` (when given) N
    integer classes. Raises EditError naming ``source``."""
    if z.dim() != 2 or z.shape[1] != z_dim:
        raise EditError(f"{source}: codes must be (N, {z_dim}) for this generator, got shape {tuple(z.shape)}")
    if z.shape[0] == 0:
        raise EditError(f"{source} holds 0 codes; expected at least 1")
    if z.dtype == torch.bool or z.is_complex():
        raise EditError(f"{source}: codes must be real numbers, got {z.dtype}")
    if not torch.isfinite(z.float()).all():
        bad = int((~torch.isfinite(z.float())).any(dim=1).sum())
        raise EditError(f"{source}: {bad} of {z.shape[0]} codes hold NaN, infinite or (beyond float32) "
                        "huge values; expected finite numbers")
    if labels is None:
        return
    if labels.dim() != 1 or labels.shape[0] != z.shape[0]:
        raise EditError(f"{source}: {z.shape[0]} codes need {z.shape[0]} labels (shape ({z.shape[0]},)), got "
                        f"shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise EditError(f"{source}: labels must be integer classes, got {labels.dtype}")


def run_encode(ckpt_path, out_path, input_path=None, label=None, split="test", count=500, use_ema=True,
               device="cpu", kernels="auto"):
    """Encode images with a VAE-GAN checkpoint's encoder into ``out_path`` (.npz: z = the mean of q(z | x),
    log_var, and labels for a conditional model). Returns (path, info: count, source and the pixel MSE of
    decoding z back)."""
    if count < 1:
        raise EditError(f"--count must be >= 1, got {count}")
    G, cfg, num_classes = load_generator(ckpt_path, device, use_ema, kernels)
    require_vaegan(G, ckpt_path)
    if num_classes:
        judge = cfg.dataset in DIGIT_DATASETS and num_classes == 10
        images, labels, source = edit_inputs(cfg, num_classes, input_path, label, split, count,
                                             feature_model(device) if judge else None, judge)
    else:  # an unconditional model: the images alone
        if input_path is not None:
            images, source = read_images(input_path)[0], str(input_path)
        else:
            images, source = load_dataset(cfg.dataset, cfg.data_path, split=split, image_size=cfg.image_size,
                                          channels=cfg.channels).images[:count], f"{cfg.dataset} {split} split"
        labels = None
    check_images(images, G.data_shape, source)
    mu, log_var = encode_images(ckpt_path, images, labels, use_ema, device, kernels=kernels)
    recon = decode_codes(ckpt_path, mu, labels, use_ema, device, kernels=kernels)
    arrays = {"z": mu.numpy(), "log_var": log_var.numpy()}
    if labels is not None:
        arrays["labels"] = labels.numpy().astype(np.int64)
    path = atomic_write(out_path, lambda f: np.savez_compressed(f, **arrays))
    return path, {"count": len(images), "source": source,
                  "reconstruction_pixel_mse": float((recon - images).pow(2).mean())}


def read_codes(codes_path):
    """The codes of an .npz as run_encode writes it: (z as a tensor, labels as a tensor or None). The file must be
    an .npz whose 'z' holds real numbers (and 'labels', when present, integers); decode_codes checks their shapes,
    counts and values. Raises EditError naming the file and what was expected."""
    expected = "an .npz with 'z' (N, z_dim) and, for a conditional model, 'labels' (N,), as ganforge encode writes"
    codes_path = Path(codes_path)
    if not codes_path.is_file():
        raise EditError(f"--codes {codes_path} does not exist or is not a file; expected {expected}")
    try:
        with open(codes_path, "rb") as f:
            if f.read(6)[:2] not in (b"PK", b"\x93N"):  # neither a zip (.npz) nor a NumPy array (.npy)
                raise EditError(f"--codes {codes_path} is not a NumPy file; expected {expected}")
            f.seek(0)
            data = np.load(f, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):  # a single .npy array
                raise EditError(f"--codes {codes_path} is a single .npy array, not an .npz; expected {expected}")
            with data:
                if "z" not in data.files:
                    raise EditError(f"--codes {codes_path} has no array 'z' (keys: {', '.join(data.files) or 'none'})"
                                    f"; expected {expected}")
                arrays = {key: data[key] for key in ("z", "labels") if key in data.files}
    except EditError:
        raise
    except (OSError, ValueError, EOFError) as exc:  # not a NumPy file, a truncated one, pickled objects
        raise EditError(f"--codes {codes_path}: not a readable .npz ({exc}); expected {expected}") from None
    # real numbers for the codes and integers for the classes: text, objects, booleans or complex values are refused
    wanted = {"z": ("fiu", "numbers"), "labels": ("iu", "integer classes")}
    for key, values in arrays.items():
        kinds, what = wanted[key]
        if values.dtype.kind not in kinds:
            raise EditError(f"--codes {codes_path}: '{key}' holds {values.dtype} values; expected {what}")
    labels = arrays.get("labels")
    with np.errstate(over="ignore", invalid="ignore"):  # a code beyond float32's range becomes inf: refused later
        z = torch.from_numpy(arrays["z"].astype(np.float32))
    return z, None if labels is None else torch.from_numpy(labels.astype(np.int64))


def run_decode(ckpt_path, codes_path, out_path, use_ema=True, device="cpu", kernels="auto"):
    """Decode the codes of an .npz (``z``, and ``labels`` for a conditional model: what run_encode writes) into a
    PNG grid or, for an .npz ``out_path``, images (uint8 NHWC) and labels. Returns (path, images)."""
    z, labels = read_codes(codes_path)
    images = decode_codes(ckpt_path, z, labels, use_ema, device, kernels=kernels, source=f"--codes {codes_path}")
    if Path(out_path).suffix == ".npz":
        arrays = image_arrays(images, labels)
        return atomic_write(out_path, lambda f: np.savez_compressed(f, **arrays)), images
    return save_samples(images, out_path), images
