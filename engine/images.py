"""Writing what G makes: image grids and 2-D scatter plots as PNG, and the loss-curve plot."""
import math

import numpy as np
import torch
from PIL import Image


def image_grid(images, nrow=None, padding=2):
    """(N, C, H, W) in [-1, 1] -> one (H', W', C) uint8 array, N images laid out in rows of ``nrow``."""
    images = images.detach().float().cpu().clamp(-1, 1)
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = torch.ones(c, ncol * (h + padding) + padding, nrow * (w + padding) + padding)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top:top + h, left:left + w] = images[i]
    pixels = ((grid + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return pixels


def image_arrays(images, labels=None):
    """{"images": uint8 NHWC, "labels": int64} of (N, C, H, W) images in [-1, 1]: what an .npz of images holds
    (``--dataset npy`` reads it back)."""
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    arrays = {"images": pixels}
    if labels is not None:
        arrays["labels"] = labels.cpu().numpy().astype(np.int64)
    return arrays


def save_samples(samples, path, nrow=None, real_points=None):
    """Save a grid of images, or a scatter plot when the samples are 2-D points."""
    if samples.dim() == 2:
        return save_scatter(samples, path, real_points)
    pixels = image_grid(samples, nrow)
    if pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    Image.fromarray(pixels).save(path)
    return path


def save_scatter(points, path, real_points=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    if real_points is not None:
        ax.scatter(*real_points[:, :2].T.cpu().numpy(), s=2, alpha=0.3, c="tab:blue", label="real")
    ax.scatter(*points[:, :2].detach().float().T.cpu().numpy(), s=2, alpha=0.5, c="tab:red", label="generated")
    ax.set_aspect("equal")
    ax.legend(loc="upper right")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_loss_curve(records, path):
    """Plot every logged loss against the iteration (records are the JSON-lines log entries)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # the penalty line only where a penalty was applied: a flat zero line says nothing
    keys = [k for k in ("d_loss", "g_loss", "penalty") if any(r.get(k) for r in records)]
    fig, ax = plt.subplots(figsize=(7, 4))
    iterations = [r["iteration"] for r in records]
    for key in keys:
        ax.plot(iterations, [r.get(key, np.nan) for r in records], label=key)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_fid_curve(points, path, floor=None):
    """FID against training time (the points of engine.metrics.evaluate.FIDTracker), log scale, with the iterations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    seconds = [p["train_seconds"] for p in points]
    ax.plot(seconds, [p["fid"] for p in points], marker="o", label="FID of the sampled generator")
    if floor is not None:
        ax.axhline(floor, color="grey", linestyle="--", label="real-data floor")
    ax.set_yscale("log")
    ax.set_xlabel("training seconds")
    ax.set_ylabel("FID")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
