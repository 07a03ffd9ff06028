"""Handwriting measured on the images themselves (ink = bright pixels on a dark background, as in MNIST): stroke
thickness and slant, smooth in the pixel values, so directions in G's latent space can be fitted to them."""
import torch


def _ink(images):
    return ((images.float().mean(dim=1) + 1) / 2).clamp(0, 1)  # (N, H, W) in [0, 1]


def stroke_thickness(images):
    """Mean stroke width in pixels: ink area over half the ink outline length (2 * area / perimeter).

    A stroke of width t and length L has area t * L and outline about 2 * L; the outline is measured as the
    total variation of the ink, so the measure is smooth in the pixel values.
    """
    ink = _ink(images)
    area = ink.sum(dim=(1, 2))
    outline = ((ink[:, 1:] - ink[:, :-1]).abs().sum(dim=(1, 2))
               + (ink[:, :, 1:] - ink[:, :, :-1]).abs().sum(dim=(1, 2)))
    return 2 * area / outline.clamp_min(1e-6)


def slant(images):
    """Horizontal shift of the ink per row going up (the shear of its second moments): > 0 leans right."""
    ink = _ink(images)
    _, h, w = ink.shape
    rows = torch.arange(h, dtype=ink.dtype).view(1, h, 1)
    cols = torch.arange(w, dtype=ink.dtype).view(1, 1, w)
    mass = ink.sum(dim=(1, 2)).clamp_min(1e-6)
    r_mean = (ink * rows).sum(dim=(1, 2)) / mass
    c_mean = (ink * cols).sum(dim=(1, 2)) / mass
    dr, dc = rows - r_mean.view(-1, 1, 1), cols - c_mean.view(-1, 1, 1)
    cov = (ink * dr * dc).sum(dim=(1, 2)) / mass
    var = (ink * dr * dr).sum(dim=(1, 2)) / mass
    return -cov / var.clamp_min(1e-6)  # rows count downwards, so a right lean has negative covariance


DIGIT_MEASURES = {"thickness": stroke_thickness, "slant": slant}
