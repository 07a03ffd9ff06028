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
def decode_codes(ckpt_path, z, labels=None, use_ema=True, device="cpu", batch_size=500, kernels="auto"):
    """A checkpoint's generator (a VAE-GAN's decoder) on codes ``z`` (N, z_dim): images (N, C, H, W) in [-1, 1],
    float32 on the CPU."""
    G, _, num_classes = load_generator(ckpt_path, device, use_ema, kernels)
    if z.dim() != 2 or z.shape[1] != G.z_dim:
        raise EditError(f"codes must be (N, {G.z_dim}) for this generator, got shape {tuple(z.shape)}")
    if num_classes:
        if labels is None:
            raise EditError(f"{ckpt_path} is conditional: give each code's class")
        check_class(int(labels.max()), num_classes)
        check_class(int(labels.min()), num_classes)
    return decode(G, z.float().to(device), labels.to(device) if num_classes else None, batch_size).cpu()


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


def run_decode(ckpt_path, codes_path, out_path, use_ema=True, device="cpu", kernels="auto"):
    """Decode the codes of an .npz (``z``, and ``labels`` for a conditional model: what run_encode writes) into a
    PNG grid or, for an .npz ``out_path``, images (uint8 NHWC) and labels. Returns (path, images)."""
    codes_path = Path(codes_path)
    if not codes_path.is_file():
        raise EditError(f"--codes {codes_path} does not exist")
    try:
        with np.load(codes_path) as data:
            if "z" not in data:
                raise EditError(f"--codes {codes_path} has no array 'z' (keys: {', '.join(data.files)})")
            z = torch.from_numpy(data["z"]).float()
            labels = torch.from_numpy(data["labels"]).long() if "labels" in data else None
    except (OSError, ValueError) as exc:
        if isinstance(exc, EditError):
            raise
        raise EditError(f"--codes {codes_path}: not a readable .npz ({exc})") from None
    images = decode_codes(ckpt_path, z, labels, use_ema, device, kernels=kernels)
    if Path(out_path).suffix == ".npz":
        arrays = image_arrays(images, labels)
        return atomic_write(out_path, lambda f: np.savez_compressed(f, **arrays)), images
    return save_samples(images, out_path), images
