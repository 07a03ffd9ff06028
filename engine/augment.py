"""Differentiable augmentation of every image D sees, for data-efficient training (DiffAugment, ADA).

With few real images, D memorises them and its feedback to G turns to noise. Augmenting every image D sees
(reals and fakes, in both steps, with gradients flowing through the augmentation to G) keeps D from
memorising, without the augmentations leaking into G's output: G is never rewarded for producing them.

Each op is applied to each sample with probability ``p``, drawn on the device, so the whole augmentation runs
inside a captured CUDA graph with no host synchronisation. With p = 0 it is exactly the identity.

    translation  shift by up to 1/8 of the image size in x and y, filling with the background (-1)
    cutout       blank (set to -1) a square of half the image size centred at a random pixel
    color        brightness (add U(-0.5, 0.5)) and contrast (scale the deviation from the image mean by
                 U(0.5, 1.5))

Adaptive strength (``target`` > 0): StyleGAN2-ADA's overfitting signal r = E[sign(D(real))] is measured on
the device every D step; p rises when r is above the target (D is sure of the reals: it overfits) and falls
when it is below, by batch / (ADJUST_KIMG * 1000) per step, so p can cross [0, 1] in ADJUST_KIMG thousand
images. The update is a handful of tensor ops inside the step.
"""
import torch

from .distributed import BatchDraw

OPS = ("translation", "cutout", "color")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5
ADJUST_KIMG = 100  # thousand real images over which p may move by 1


def parse_policy(text):
    """"translation,cutout" -> ("translation", "cutout"); "none" or "" -> ()."""
    if text in (None, "", "none"):
        return ()
    ops = tuple(op.strip() for op in text.split(",") if op.strip())
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise ValueError(f"--augment: unknown op {', '.join(unknown)}; expected a comma-separated subset of "
                         f"{OPS}, or none")
    return ops


def translate(x, apply, draw=None):
    """Shift each image by a random offset (up to TRANSLATION_RATIO of its size); background fills the gap."""
    n, _, h, w = x.shape
    draw = draw or BatchDraw(n, device=x.device)
    sy, sx = max(1, int(h * TRANSLATION_RATIO + 0.5)), max(1, int(w * TRANSLATION_RATIO + 0.5))
    dy = draw.randint(-sy, sy + 1, 1, 1) * apply.reshape(n, 1, 1)
    dx = draw.randint(-sx, sx + 1, 1, 1) * apply.reshape(n, 1, 1)
    rows = torch.arange(h, device=x.device).reshape(1, h, 1) - dy      # (n, h, 1): source row of each output row
    cols = torch.arange(w, device=x.device).reshape(1, 1, w) - dx      # (n, 1, w)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)       # (n, h, w)
    index = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).reshape(n, 1, h * w).expand(-1, x.shape[1], -1)
    moved = x.reshape(n, x.shape[1], h * w).gather(2, index).reshape_as(x)  # gather: differentiable in x
    return torch.where(inside.unsqueeze(1), moved, torch.full_like(x, -1.0))


def cutout(x, apply, draw=None):
    """Blank a square of CUTOUT_RATIO of the image size at a random centre, for the samples in ``apply``."""
    n, _, h, w = x.shape
    draw = draw or BatchDraw(n, device=x.device)
    ch, cw = max(1, int(h * CUTOUT_RATIO + 0.5)), max(1, int(w * CUTOUT_RATIO + 0.5))
    cy = draw.randint(0, h, 1, 1)  # the centre may sit near an edge: part of the
    cx = draw.randint(0, w, 1, 1)  # square then falls outside the image
    dy = torch.arange(h, device=x.device).reshape(1, h, 1) - cy
    dx = torch.arange(w, device=x.device).reshape(1, 1, w) - cx
    hole = (dy >= -(ch // 2)) & (dy < ch - ch // 2) & (dx >= -(cw // 2)) & (dx < cw - cw // 2)
    hole = hole & apply.reshape(n, 1, 1).bool()
    return torch.where(hole.unsqueeze(1), torch.full_like(x, -1.0), x)


def color(x, apply, draw=None):
    """Random brightness and contrast per sample (applied where ``apply`` is 1)."""
    draw = draw or BatchDraw(x.shape[0], device=x.device)
    brightness = (draw.rand(dtype=x.dtype) - 0.5).reshape(-1, 1, 1, 1)
    contrast = (draw.rand(dtype=x.dtype) + 0.5).reshape(-1, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    changed = (x - mean) * contrast + mean + brightness
    return torch.where(apply.reshape(-1, 1, 1, 1).bool(), changed, x)  # untouched samples stay bit-exact


_FUNCTIONS = {"translation": translate, "cutout": cutout, "color": color}


class Augment:
    """The augmentation one training run applies; ``p`` is a device tensor the steps read and (adaptive) update."""

    def __init__(self, policy, p, target, batch_size, device):
        self.ops = parse_policy(policy)
        self.target = target
        self.adaptive = target > 0
        self.p = torch.tensor(0.0 if self.adaptive else float(p), device=device)
        self.step_size = batch_size / (ADJUST_KIMG * 1000)

    @property
    def enabled(self):
        return bool(self.ops)

    def __call__(self, x, draw=None):
        """Augment the batch ``x``; ``draw`` (engine.distributed.BatchDraw) makes its random numbers: under torchrun,
        this rank's rows of draws for the global batch. Default: draws for ``x`` alone."""
        if not self.ops:
            return x
        if x.dim() != 4:
            raise ValueError("--augment applies to images (N, C, H, W); this data is not images")
        draw = draw or BatchDraw(x.shape[0], device=x.device)
        for op in self.ops:
            apply = (draw.rand() < self.p).long()
            x = _FUNCTIONS[op](x, apply, draw)
        return x

    @torch.no_grad()
    def adjust(self, real_scores, world=None):
        """ADA's update from this step's real scores, on the device (no-op with a fixed p); under torchrun the
        signal is averaged over the ranks' equal parts of the batch, so p stays the same on every rank."""
        if not (self.ops and self.adaptive):
            return
        overfit = torch.sign(real_scores.float()).mean().reshape(1)
        if world is not None:
            world.average_([overfit])
        overfit = overfit.reshape(())
        self.p.add_(torch.sign(overfit - self.target) * self.step_size).clamp_(0.0, 1.0)
