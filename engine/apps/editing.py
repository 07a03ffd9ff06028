"""Editing real images with a conditional generator: encode -> edit -> decode.

Encode: find z with G(z, y) close to a real image x of class y. A VAE-GAN's own encoder (trained with G, in the
checkpoint) or an encoder network trained on G afterwards (``train_encoder``, saved beside the checkpoint as
encoder.pt) gives a first guess; a per-image optimisation of a pixel + classifier-feature loss refines it
(alone, it starts from the best of a few random codes).
Edit: decode the same z with another class (the same handwriting as another digit), or move z along an
attribute direction (stroke thickness, slant) found by regressing the attribute, measured on G's own samples,
on z. Measure: reconstruction error, class kept, edit success, style kept, attribute monotonicity.
"""
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ...models import VAEGANGenerator, build_models, draw_attributes
from ...models.conditioning import condition_embedding
from ..checkpoint import load_checkpoint, load_generator, read_torch_file
from ..config import TrainConfig
from ..data import DataError, attribute_vectors, load_dataset
from ..metrics.classifier import DIGIT_DATASETS
from ..sampling import requested_attributes
from ..images import image_arrays, image_grid, save_samples
from ..io import atomic_write, atomic_write_json

ENCODER_FORMAT = "ganforge-encoder/1"
ENCODER_NAME = "encoder.pt"  # written beside the generator's checkpoint


class EditError(ValueError):
    """Editing cannot run as asked (wrong checkpoint, class, image shape, missing encoder)."""


# ----------------------------------------------------------------------------------------------------------
# Attributes measured on the images themselves (ink = bright pixels on a dark background, as in MNIST)


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


ATTRIBUTES = {"thickness": stroke_thickness, "slant": slant}


# ----------------------------------------------------------------------------------------------------------
# The generator, the classifier, the encoder


def load_conditional_generator(ckpt_path, device="cpu", use_ema=True, kernels="auto"):
    """(G with frozen weights, TrainConfig, num_classes); refuses unconditional and non-image models."""
    G, cfg, num_classes = load_generator(ckpt_path, device, use_ema, kernels)
    if not num_classes and not G.attribute_names:
        raise EditError(f"{ckpt_path} is an unconditional model; editing needs a conditional one "
                        "(ganforge train --conditional, or --condition-on attributes)")
    if len(G.data_shape) != 3:
        raise EditError(f"editing works on images; {ckpt_path} generates {G.data_shape} points")
    G.requires_grad_(False)
    return G, cfg, num_classes


def check_class(label, num_classes, what="class"):
    if not 0 <= label < num_classes:
        raise EditError(f"{what} {label} is out of range: the model has classes 0..{num_classes - 1}")
    return label


def check_images(images, data_shape, source="images"):
    if tuple(images.shape[1:]) != tuple(data_shape):
        c, h, w = data_shape
        got = "x".join(str(s) for s in images.shape[1:])
        raise EditError(f"{source} are {got} (channels x height x width) but the generator makes {c}x{h}x{w}; "
                        "give images of that size and channel count")
    return images


class Encoder(nn.Module):
    """Image (and its class) -> latent code: strided convolutions, then a dense layer that also sees the class."""

    def __init__(self, data_shape, z_dim, num_classes, width=32, attribute_names=()):
        super().__init__()
        self.data_shape, self.z_dim, self.num_classes, self.width = tuple(data_shape), z_dim, num_classes, width
        self.attribute_names = tuple(attribute_names)
        channels = data_shape[0]
        self.conv = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 3, 1, 1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(4),
        )
        self.label_embed = condition_embedding(num_classes, attribute_names, 64)  # its class, or its attributes
        self.fc = nn.Sequential(nn.Linear(4 * width * 16 + 64, 512), nn.LeakyReLU(0.2), nn.Linear(512, z_dim))

    def forward(self, x, labels):
        return self.fc(torch.cat([self.conv(x).flatten(1), self.label_embed(labels)], dim=1))


def encoder_path(ckpt_path):
    return Path(ckpt_path).with_name(ENCODER_NAME)


def save_encoder(path, encoder, info):
    state = {"format": ENCODER_FORMAT, "data_shape": list(encoder.data_shape), "z_dim": encoder.z_dim,
             "num_classes": encoder.num_classes, "attribute_names": list(encoder.attribute_names),
             "width": encoder.width, "info": info,
             "state": encoder.state_dict()}
    return atomic_write(path, lambda f: torch.save(state, f))


def load_encoder(path, G, device="cpu"):
    path = Path(path)
    if not path.is_file():
        raise EditError(f"encoder not found: {path} (train one with ganforge train-encoder --ckpt ...)")
    try:
        state = read_torch_file(path, "encoder")
    except ValueError as exc:
        raise EditError(str(exc)) from None
    if not isinstance(state, dict) or state.get("format") != ENCODER_FORMAT:
        raise EditError(f"{path} is not a ganforge encoder (expected format {ENCODER_FORMAT!r})")
    names = tuple(state.get("attribute_names", ()))
    if ((tuple(state["data_shape"]), state["z_dim"], state["num_classes"], names)
            != (G.data_shape, G.z_dim, G.num_classes, G.attribute_names)):
        raise EditError(f"encoder {path} was trained for a generator of shape {state['data_shape']}, z_dim "
                        f"{state['z_dim']}, {state['num_classes']} classes, attributes {list(names)}; this one is "
                        f"{list(G.data_shape)}, {G.z_dim}, {G.num_classes}, {list(G.attribute_names)}")
    encoder = Encoder(state["data_shape"], state["z_dim"], state["num_classes"], state["width"], names)
    encoder.load_state_dict(state["state"])
    return encoder.to(device).eval(), state["info"]


def vaegan_encoder(G):
    """A VAE-GAN's own encoder, trained with G, as an editing encoder: (x, y) -> the mean of q(z | x, y), its most
    likely code."""
    def encoder(x, labels):
        return G.encode(x, labels if G.num_classes or G.attribute_names else None)[0]
    return encoder


def require_vaegan(G, ckpt_path):
    if not isinstance(G, VAEGANGenerator):
        raise EditError(f"{ckpt_path} holds no encoder: only a VAE-GAN (ganforge train --model vaegan) encodes in "
                        "one pass (for another model: ganforge train-encoder, or ganforge edit)")
    return G


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


def reads_digits(G):
    """Whether the embedded digit classifier can read G's images (grey 28x28)."""
    return tuple(G.data_shape) == (1, 28, 28)


def feature_model(device="cpu"):
    """The project's digit classifier, frozen: its features give the perceptual term of the encoding loss."""
    from ..metrics.classifier import load_mnist_classifier

    return load_mnist_classifier(device).requires_grad_(False)


def per_image_loss(fake, real, classifier, feature_weight, real_features=None):
    """Pixel MSE + feature_weight * mean squared classifier-feature difference, one value per image.
    ``real_features``: the classifier's features of ``real``, when already computed (they never change)."""
    loss = (fake - real).pow(2).flatten(1).mean(dim=1)
    if feature_weight:
        if real_features is None:
            with torch.no_grad():
                real_features = classifier.features(real)
        loss = loss + feature_weight * (classifier.features(fake) - real_features).pow(2).mean(dim=1)
    return loss


def train_encoder(ckpt_path, iterations=2000, batch_size=64, lr=1e-3, feature_weight=0.1, real_weight=1.0,
                  use_ema=True, seed=0, device="cpu", kernels="auto", out=None, progress=True):
    """Train an encoder for the checkpoint's G and write it beside the checkpoint (or to ``out``).

    Each step: codes z of G's own samples are regressed directly (plus the pixel error of decoding them), and
    real training images (the train split; the test split stays unseen) are reconstructed through G under the
    pixel + feature loss, so the encoder also learns where real images sit in G's space.
    """
    G, cfg, num_classes = load_conditional_generator(ckpt_path, device, use_ema, kernels)
    real = load_dataset(cfg.dataset, cfg.data_path, split="train", image_size=cfg.image_size,
                        channels=cfg.channels)
    real_x = real.images.to(device)
    real_y = (attribute_vectors(real, G.attribute_names) if G.attribute_names else real.labels).to(device)
    classifier = feature_model(device)
    if not reads_digits(G):  # the digit classifier's features mean nothing on other images: pixels alone
        feature_weight = 0.0
    torch.manual_seed(seed)
    encoder = Encoder(G.data_shape, cfg.z_dim, num_classes, attribute_names=G.attribute_names).to(device)
    attribute_draws = torch.Generator(device).manual_seed(seed)
    opt = torch.optim.Adam(encoder.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations)
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(range(iterations), desc="encoder", unit="it", disable=not progress)
    for _ in bar:
        z = torch.randn(batch_size, cfg.z_dim, generator=gen).to(device)
        if G.attribute_names:
            y = draw_attributes(G, batch_size, attribute_draws)
        else:
            y = torch.randint(num_classes, (batch_size,), generator=gen).to(device)
        with torch.no_grad():
            fake = G(z, y)
        z_hat = encoder(fake, y)
        latent = F.mse_loss(z_hat, z)
        loss = latent + per_image_loss(G(z_hat, y), fake, classifier, feature_weight).mean()
        if real_weight:
            idx = torch.randint(len(real_x), (batch_size,), generator=gen).to(device)
            x, yr = real_x[idx], real_y[idx]
            loss = loss + real_weight * per_image_loss(G(encoder(x, yr), yr), x, classifier, feature_weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(latent=f"{latent.item():.3f}", loss=f"{loss.item():.3f}", refresh=False)
    encoder.eval()
    info = {"checkpoint": str(ckpt_path), "iterations": iterations, "batch_size": batch_size, "lr": lr,
            "feature_weight": feature_weight, "real_weight": real_weight, "use_ema": use_ema, "seed": seed,
            "final_latent_mse": float(latent.detach())}
    path = save_encoder(Path(out) if out else encoder_path(ckpt_path), encoder, info)
    return encoder, path, info


def encode(G, images, labels, encoder=None, steps=200, lr=0.05, feature_weight=0.1, prior_weight=0.05,
           classifier=None, batch_size=500, candidates=16, seed=0, progress=True):
    """Latent codes (N, z_dim) with G(z, labels) close to ``images``, on G's device, batch by batch.

    The start: the encoder's guess, or else the best of ``candidates`` random codes per image. Then ``steps``
    Adam steps on each image's own loss (pixel + feature, plus a prior that keeps |z|^2 / z_dim near 1 so the
    code stays where G was trained, and edits of it stay meaningful). Losses are summed over the batch, so
    every code follows its own gradient exactly as if optimised alone.
    """
    device = next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    codes = []
    bar = tqdm(total=len(images) * max(steps, 1), desc="encode", unit="img-step", disable=not progress)
    for i in range(0, len(images), batch_size):
        x, y = images[i:i + batch_size].to(device), labels[i:i + batch_size].to(device)
        with torch.no_grad():
            # the classifier's features of the targets, for the losses below (none to compute for one encoder pass)
            target = classifier.features(x) if feature_weight and (steps or encoder is None) else None
            if encoder is not None:
                z = encoder(x, y)
            else:
                pool = torch.randn(candidates, len(x), G.z_dim, generator=gen).to(device)
                errors = torch.stack([per_image_loss(G(c, y), x, classifier, feature_weight, target)
                                      for c in pool])
                z = pool[errors.argmin(dim=0), torch.arange(len(x), device=device)]
        z = z.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        for _ in range(steps):
            loss = per_image_loss(G(z, y), x, classifier, feature_weight, target)
            loss = loss + prior_weight * (z.pow(2).mean(dim=1) - 1).pow(2)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            bar.update(len(x))
        if not steps:
            bar.update(len(x))
        codes.append(z.detach())
    bar.close()
    return torch.cat(codes)


@torch.no_grad()
def decode(G, z, labels, batch_size=500):
    return torch.cat([G(z[i:i + batch_size], None if labels is None else labels[i:i + batch_size]).float()
                      for i in range(0, len(z), batch_size)])


@torch.no_grad()
def attribute_directions(G, num_classes, n=4000, seed=0, batch_size=500):
    """For each attribute: a unit direction in z along which it grows, by least squares of the attribute
    (measured on n samples of G) on z with one intercept per class. Also the fit's R^2 and the attribute's
    change per unit step along the direction."""
    device = next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.z_dim, generator=gen)
    labels = torch.arange(n) % num_classes
    images = decode(G, z.to(device), labels.to(device), batch_size).cpu()
    design = torch.cat([z, F.one_hot(labels, num_classes).float()], dim=1).double()
    result = {}
    for name, measure in ATTRIBUTES.items():
        target = measure(images).double()
        coef = torch.linalg.lstsq(design, target[:, None]).solution[:, 0]
        residual = target - design @ coef
        class_means = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, target) / torch.bincount(
            labels, minlength=num_classes)
        within = target - class_means[labels]  # R^2 of z beyond what the class explains
        weights = coef[:G.z_dim].float()
        result[name] = {"direction": F.normalize(weights, dim=0),
                        "per_unit": float(weights.norm()),
                        "r2_within_class": float(1 - residual.pow(2).sum() / within.pow(2).sum())}
    return result


# ----------------------------------------------------------------------------------------------------------
# Measuring edits


@torch.no_grad()
def predict(classifier, images, batch_size=500):
    device = next(classifier.parameters()).device
    return torch.cat([classifier(images[i:i + batch_size].to(device)).argmax(dim=1).cpu()
                      for i in range(0, len(images), batch_size)])


@torch.no_grad()
def features(classifier, images, batch_size=500):
    device = next(classifier.parameters()).device
    return torch.cat([classifier.features(images[i:i + batch_size].to(device)).cpu()
                      for i in range(0, len(images), batch_size)])


def _pearson(a, b):
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))


def _spearman_rows(values, order):
    """Mean over rows of the rank correlation between each row of ``values`` and ``order``."""
    ranks = values.argsort(dim=1).argsort(dim=1).double()
    target = order.argsort().argsort().double().expand_as(ranks)
    ranks, target = ranks - ranks.mean(1, keepdim=True), target - target.mean(1, keepdim=True)
    return float(((ranks * target).sum(1) / (ranks.norm(dim=1) * target.norm(dim=1)).clamp_min(1e-12)).mean())


def style_kept(originals, edited, targets, random_edits):
    """Per attribute: within each target class, the correlation over images between the original's attribute
    and the edited image's, averaged over target classes; beside it the same for random codes of the target
    class (what no style transfer at all gives) and the mean absolute change."""
    out = {}
    for name, measure in ATTRIBUTES.items():
        a_orig, a_edit, a_rand = measure(originals), measure(edited), measure(random_edits)
        corr, corr_random = [], []
        for t in targets.unique():
            rows = targets == t
            corr.append(_pearson(a_orig[rows], a_edit[rows]))
            corr_random.append(_pearson(a_orig[rows], a_rand[rows]))
        out[name] = {"correlation": float(np.mean(corr)), "correlation_random_code": float(np.mean(corr_random)),
                     "mean_abs_change": float((a_edit - a_orig).abs().mean()),
                     "mean_abs_change_random_code": float((a_rand - a_orig).abs().mean())}
    return out


def edit_study(G, num_classes, images, labels, encoder=None, steps=200, strengths=(-3, -1.5, 0, 1.5, 3),
               classifier=None, judge=True, seed=0, progress=True, lr=0.05, feature_weight=0.1, prior_weight=0.05,
               direction_samples=4000):
    """Encode ``images`` of classes ``labels``, decode every class edit and attribute edit, and measure.

    Returns (report dict, tensors for the grid). ``judge``: the classifier can read these classes (digits);
    otherwise the class-based figures are left out.
    """
    device = next(G.parameters()).device
    n = len(images)
    # one image first, untimed: the first pass through the networks pays the process's one-off warm-up (about a
    # second on a CPU), which is no part of the cost per image
    encode(G, images[:1], labels[:1], encoder, min(steps, 1), lr, feature_weight, prior_weight, classifier,
           seed=seed, progress=False)
    started = time.perf_counter()
    z = encode(G, images, labels, encoder, steps, lr, feature_weight, prior_weight, classifier, seed=seed,
               progress=progress)
    encode_seconds = time.perf_counter() - started  # encoder and refinement of all the images
    recon = decode(G, z, labels.to(device)).cpu()
    pixel_mse = (recon - images).pow(2).flatten(1).mean(1)
    report = {"images": n, "encoder": encoder is not None, "refine_steps": steps, "encode_seconds": encode_seconds,
              "reconstruction": {"pixel_mse": float(pixel_mse.mean()), "pixel_mse_median": float(pixel_mse.median())}}
    f_orig, f_recon = features(classifier, images), features(classifier, recon)
    # distance between two different real images of the same class, for scale
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    same = labels[perm] == labels
    report["reconstruction"]["feature_distance"] = float((f_recon - f_orig).norm(dim=1).mean())
    report["reconstruction"]["feature_distance_real_pairs_same_class"] = (
        float((f_orig[perm][same] - f_orig[same]).norm(dim=1).mean()) if same.any() else None)

    # class edits: each image decoded with every class (its own class included: that is the reconstruction)
    targets = torch.arange(num_classes).repeat(n)
    sources = labels.repeat_interleave(num_classes)
    z_rep = z.repeat_interleave(num_classes, dim=0)
    class_edits = decode(G, z_rep, targets.to(device)).cpu()
    other = targets != sources
    random_codes = torch.randn(len(z_rep), G.z_dim, generator=torch.Generator().manual_seed(seed + 1)).to(device)
    random_edits = decode(G, random_codes[other], targets[other].to(device)).cpu()
    report["style_kept"] = style_kept(images.repeat_interleave(num_classes, 0)[other], class_edits[other],
                                      targets[other], random_edits)
    if judge:
        pred_orig, pred_recon = predict(classifier, images), predict(classifier, recon)
        pred_edit = predict(classifier, class_edits[other])
        hits = (pred_edit == targets[other]).float()
        report["reconstruction"].update({
            "class_kept": float((pred_recon == labels).float().mean()),
            "class_agrees_with_original_prediction": float((pred_recon == pred_orig).float().mean()),
            "classifier_accuracy_on_originals": float((pred_orig == labels).float().mean())})
        report["class_edit"] = {
            "success": float(hits.mean()), "pairs": int(other.sum()),
            "success_per_target": {int(t): float(hits[targets[other] == t].mean()) for t in range(num_classes)},
            "success_random_code": float((predict(classifier, random_edits) == targets[other]).float().mean())}

    # attribute edits along the regression directions, at each strength
    directions = attribute_directions(G, num_classes, n=direction_samples, seed=seed)
    strengths_t = torch.tensor(strengths, dtype=torch.float32)
    report["attributes"] = {}
    attribute_images = {}
    for name, found in directions.items():
        values, decoded = [], []
        for s in strengths:
            images_s = decode(G, z + s * found["direction"].to(device), labels.to(device)).cpu()
            decoded.append(images_s)
            values.append(ATTRIBUTES[name](images_s))
        values = torch.stack(values, dim=1)  # (n, strengths)
        on_originals = ATTRIBUTES[name](images)
        means = values.mean(0)
        entry = {"strengths": list(strengths), "mean": [float(v) for v in means],
                 "mean_is_monotonic": bool((means.diff() > 0).all()),
                 "per_image_rank_correlation": _spearman_rows(values, strengths_t),
                 "fraction_images_monotonic": float((values.diff(dim=1) > 0).all(dim=1).float().mean()),
                 "regression_r2_within_class": found["r2_within_class"],
                 "attribute_change_per_unit_strength_in_fit": found["per_unit"],
                 "on_originals_mean": float(on_originals.mean()),
                 # the whole sweep's effect, in units of how much the attribute varies among the real images
                 "sweep_change_in_original_std": (float((means[-1] - means[0]) / on_originals.std().clamp_min(1e-6))
                                                  if n > 1 else None)}
        if judge:
            entry["class_kept_at_extremes"] = [float((predict(classifier, decoded[i]) == labels).float().mean())
                                               for i in (0, len(strengths) - 1)]
        report["attributes"][name] = entry
        attribute_images[name] = (decoded[0], decoded[-1])
    names = list(directions)
    if len(names) == 2:
        report["attribute_direction_cosine"] = float(directions[names[0]]["direction"]
                                                     @ directions[names[1]]["direction"])
    grid = {"recon": recon, "class_edits": class_edits.reshape(n, num_classes, *images.shape[1:]),
            "attributes": attribute_images}
    return report, grid


def write_edit_grid(path, images, grid, rows=8, max_classes=10):
    """One row per image: original | reconstruction | each class | each attribute at its lowest and highest
    strength. Returns the column titles."""
    rows = min(rows, len(images))
    n_classes = min(grid["class_edits"].shape[1], max_classes)
    columns, titles = [], ["original", "reconstruction"]
    for i in range(rows):
        row = [images[i], grid["recon"][i], *grid["class_edits"][i, :n_classes]]
        for low, high in grid["attributes"].values():
            row += [low[i], high[i]]
        columns.append(torch.stack(row))
    titles += [f"class {c}" for c in range(n_classes)]
    for name in grid["attributes"]:
        titles += [f"{name} -", f"{name} +"]
    per_row = columns[0].shape[0]
    pixels = image_grid(torch.cat(columns), nrow=per_row)
    from PIL import Image

    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    atomic_write(path, lambda f: image.save(f, format="PNG"))
    return titles


# ----------------------------------------------------------------------------------------------------------
# Inputs: a split of the model's dataset, or the user's own images


def read_images(path):
    """A single image file, an image folder or an .npy/.npz array: (images in [-1, 1], labels or None)."""
    path = Path(path)
    if not path.exists():
        raise EditError(f"--input {path} does not exist")
    if path.is_dir():
        data = load_dataset("folder", path)
        return data.images, data.labels
    if path.suffix in (".npy", ".npz"):
        data = load_dataset("npy", path)
        return data.images, data.labels
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "RGB"):
                img = img.convert("RGB" if img.mode in ("RGBA", "P", "CMYK") else "L")
            pixels = np.asarray(img, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as exc:
        raise EditError(f"--input {path}: not a readable image ({exc})") from None
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    return torch.from_numpy(pixels).permute(2, 0, 1)[None] / 127.5 - 1, None


def model_split(cfg, split):
    """A split of the model's own dataset, as it trained on it; an EditError that suggests --input if unreadable."""
    try:
        return load_dataset(cfg.dataset, cfg.data_path, split=split, image_size=cfg.image_size, channels=cfg.channels)
    except DataError as exc:
        raise EditError(f"{exc}; or give --input images") from None


def edit_inputs(cfg, num_classes, input_path=None, label=None, split="test", count=500, classifier=None,
                judge=True):
    """(images, labels, where from): --input images, else the first ``count`` of the model's dataset split."""
    if input_path is not None:
        images, labels = read_images(input_path)
        source = str(input_path)
    else:
        data = model_split(cfg, split)
        images, labels = data.images[:count], data.labels[:count] if data.labels is not None else None
        source = f"{cfg.dataset} {split} split"
    if label is not None:
        labels = torch.full((len(images),), check_class(label, num_classes, "--label"))
    if labels is None:
        if not judge:
            raise EditError(f"{source}: the images have no labels; give their class with --label")
        labels = predict(classifier, images)  # digits: the classifier reads the source class
    if int(labels.max()) >= num_classes:
        raise EditError(f"{source}: class {int(labels.max())} is out of range: the model has classes "
                        f"0..{num_classes - 1}")
    return images, labels, source


def run_edit(ckpt_path, out_dir, input_path=None, label=None, split="test", count=500, encoder="auto",
             steps=10, strengths=(-3, -1.5, 0, 1.5, 3), rows=8, use_ema=True, seed=0, device="cpu",
             kernels="auto", progress=True, settings=None):
    """Encode, edit, decode and measure; write edit_grid.png and edit.json into ``out_dir``. A model conditioned on
    attributes edits those: ``settings`` ({name: value}) in one edit, or without them each attribute flipped."""
    if count < 1:
        raise EditError(f"--count must be >= 1, got {count}")
    if steps < 0:
        raise EditError(f"--steps must be >= 0, got {steps}")
    G, cfg, num_classes = load_conditional_generator(ckpt_path, device, use_ema, kernels)
    if G.attribute_names:
        return run_attribute_edit(ckpt_path, G, cfg, out_dir, settings, input_path, split, count, encoder, steps,
                                  rows, use_ema, seed, device, progress)
    if settings:
        raise EditError(f"--set edits attributes; {ckpt_path} is conditioned on classes (edit those: every class is "
                        "decoded)")
    classifier = feature_model(device)
    judge = cfg.dataset in DIGIT_DATASETS and num_classes == 10
    images, labels, source = edit_inputs(cfg, num_classes, input_path, label, split, count, classifier, judge)
    check_images(images, G.data_shape, source)
    enc, enc_info = None, None
    if encoder == "auto":  # a VAE-GAN's own encoder, else encoder.pt beside the checkpoint when there is one
        if isinstance(G, VAEGANGenerator):
            encoder = "vaegan"
        else:
            encoder = encoder_path(ckpt_path) if encoder_path(ckpt_path).is_file() else None
    if encoder == "vaegan":
        enc = vaegan_encoder(require_vaegan(G, ckpt_path))
        enc_info = {"kind": "the VAE-GAN's own, trained with G (in the checkpoint)", "use_ema": use_ema}
    elif encoder is not None:
        enc, enc_info = load_encoder(encoder, G, device)
    report, grid = edit_study(G, num_classes, images, labels, enc, steps, strengths, classifier, judge, seed,
                              progress)
    out_dir = Path(out_dir)
    titles = write_edit_grid(out_dir / "edit_grid.png", images, grid, rows)
    report = {"checkpoint": str(ckpt_path), "inputs": source,
              "encoder_file": str(encoder) if encoder not in (None, "vaegan") else None,
              "encoder_training": enc_info, "grid": "edit_grid.png", "grid_columns": titles,
              "classifier_judges_classes": judge, "torch": torch.__version__, **report}
    if judge:
        rec, edit = report["reconstruction"], report["class_edit"]
        report["targets"] = {"edit_success_min": 0.9, "reconstruction_class_kept_min": 0.9,
                             "met": edit["success"] >= 0.9 and rec["class_kept"] >= 0.9}
    atomic_write_json(out_dir / "edit.json", report)
    return report



# ----------------------------------------------------------------------------------------------------------
# Attribute edits (a model trained with --condition-on): the same code z, decoded with other attribute values

MAX_FLIP_EDITS = 8  # without --set: each of the first attributes flipped in turn, one grid column each


def pick_encoder(G, ckpt_path, encoder, device):
    """(encoder callable or None, what it is): a VAE-GAN's own, an encoder file, encoder.pt beside the checkpoint
    ("auto"), or None (optimisation alone)."""
    if encoder == "auto":
        if isinstance(G, VAEGANGenerator):
            encoder = "vaegan"
        else:
            encoder = encoder_path(ckpt_path) if encoder_path(ckpt_path).is_file() else None
    if encoder == "vaegan":
        return vaegan_encoder(require_vaegan(G, ckpt_path)), {"kind": "the VAE-GAN's own, trained with G"}
    if encoder is None:
        return None, None
    return load_encoder(encoder, G, device)


def load_critic(ckpt_path, G, device):
    """The checkpoint's D, in eval mode: its projection reads D's evidence of each attribute in an image."""
    state = load_checkpoint(ckpt_path)
    cfg = TrainConfig.from_dict(state["config"])
    _, D = build_models(cfg.model, G.data_shape, cfg.z_dim, 0, cfg.width, impl="ref", spectral_norm=cfg.spectral_norm,
                        d_batch_norm=cfg.penalty == "none" and not cfg.spectral_norm, backbone=cfg.vae_backbone,
                        attribute_names=G.attribute_names)
    D.load_state_dict(state["D"])
    return D.to(device).eval().requires_grad_(False)


@torch.no_grad()
def attribute_evidence(D, images, batch_size=500):
    """(N, K): D's projection term per attribute, <w_k, h(x)>; D's score of x with attributes a adds sum_k a_k of
    these, so a larger value is D reading more of attribute k in x."""
    device = next(D.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device)
        probe = torch.zeros(len(x), len(D.attribute_names), device=device)
        _, h = D.scores_and_features(x, probe)
        out.append((h.float() @ D.label_embed.weight.float().t()).cpu())
    return torch.cat(out)


def attribute_edits(names, attributes, settings):
    """[(title, edited attribute vectors)]: the --set settings as one edit, else each attribute flipped."""
    if settings:
        edited = attributes.clone()
        for name, value in settings.items():
            edited[:, names.index(name)] = value
        return [(", ".join(f"{k}={v:g}" for k, v in settings.items()), edited)]
    edits = []
    for k, name in enumerate(names[:MAX_FLIP_EDITS]):
        edited = attributes.clone()
        edited[:, k] = -edited[:, k]
        edits.append((f"{name} flipped", edited))
    return edits


def run_attribute_edit(ckpt_path, G, cfg, out_dir, settings=None, input_path=None, split="test", count=500,
                       encoder="auto", steps=10, rows=8, use_ema=True, seed=0, device="cpu", progress=True,
                       lr=0.05, prior_weight=0.05):
    """Encode real images with their attributes (the dataset's own rows; --input images get the commonest value of
    each attribute in the model's bank), decode the codes with edited attributes, measure, and write
    edit_grid.png (original | reconstruction | each edit) and edit.json into ``out_dir``.

    Measured: the reconstruction's pixel error beside that of a random code with the same attributes; per edit,
    the pixel change, and whether D's evidence of each changed attribute (its projection term) moved toward the
    new value. D trained with G is no independent judge; it is the model's own reading of the attribute."""
    names = G.attribute_names
    requested_attributes(G, 1, settings, checkpoint=ckpt_path)  # unknown names fail here, before any work
    if input_path is not None:
        images, _ = read_images(input_path)
        bank = requested_attributes(G, 4096, seed=seed)
        attributes = torch.where(bank.mean(0) > 0, 1.0, -1.0).expand(len(images), -1).clone()
        source, assumed = str(input_path), True
    else:
        data = model_split(cfg, split)
        images, attributes = data.images[:count], attribute_vectors(data, names)[:count]
        source, assumed = f"{cfg.dataset} {split} split", False
    check_images(images, G.data_shape, source)
    enc, enc_info = pick_encoder(G, ckpt_path, encoder, device)
    started = time.perf_counter()
    z = encode(G, images, attributes, enc, steps, lr, 0.0, prior_weight, None, seed=seed, progress=progress)
    encode_seconds = time.perf_counter() - started
    recon = decode(G, z, attributes.to(device)).cpu()
    random_codes = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed + 1)).to(device)
    random_recon = decode(G, random_codes, attributes.to(device)).cpu()
    D = load_critic(ckpt_path, G, device)
    evidence_recon = attribute_evidence(D, recon)
    mse = (recon - images).pow(2).flatten(1).mean(1)
    report = {"checkpoint": str(ckpt_path), "inputs": source, "images": len(images), "attributes": list(names),
              "attributes_of_inputs": "assumed: the commonest value of each in the model's bank" if assumed
              else "the dataset's own", "encoder_training": enc_info, "refine_steps": steps,
              "encode_seconds": encode_seconds, "torch": torch.__version__,
              "reconstruction": {"pixel_mse": float(mse.mean()), "pixel_mse_median": float(mse.median()),
                                 "pixel_mse_random_code_same_attributes":
                                     float((random_recon - images).pow(2).flatten(1).mean(1).mean())},
              "edits": []}
    columns, edited_images = ["original", "reconstruction"], []
    for title, edited in attribute_edits(names, attributes, settings):
        out = decode(G, z, edited.to(device)).cpu()
        edited_images.append(out)
        moved = attribute_evidence(D, out) - evidence_recon
        changed = edited != attributes  # (N, K): the attributes this edit changes, image by image
        toward = torch.sign(edited - attributes)
        per_attribute = {}
        for k, name in enumerate(names):
            rows_k = changed[:, k]
            if rows_k.any():
                per_attribute[name] = {"images_changed": int(rows_k.sum()),
                                       "critic_evidence_moved_toward_new_value":
                                           float((moved[rows_k, k] * toward[rows_k, k] > 0).float().mean())}
        report["edits"].append({"edit": title, "images_changed": int(changed.any(dim=1).sum()),
                                "mean_abs_pixel_change": float((out - recon).abs().mean()),
                                "per_attribute": per_attribute})
        columns.append(title)
    shown = min(rows, len(images))
    grid = torch.cat([torch.stack([images[i], recon[i], *(e[i] for e in edited_images)]) for i in range(shown)])
    pixels = image_grid(grid, nrow=len(columns))
    from PIL import Image

    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    out_dir = Path(out_dir)
    atomic_write(out_dir / "edit_grid.png", lambda f: image.save(f, format="PNG"))
    report.update({"grid": "edit_grid.png", "grid_columns": columns})
    atomic_write_json(out_dir / "edit.json", report)
    return report


# ----------------------------------------------------------------------------------------------------------
# The VAE-GAN's round trip as files: images -> codes.npz -> images


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
