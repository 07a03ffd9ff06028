"""The encoder of an editing run: a network from an image (and its class or attributes) to G's latent code, trained
on G after G's training and saved beside its checkpoint (or a VAE-GAN's own, trained with G); and encode / decode,
which find codes for real images (the encoder's guess refined per image) and turn codes back into images."""
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ....models import VAEGANGenerator, draw_attributes
from ....models.conditioning import condition_embedding
from ...checkpoint import read_torch_file
from ...data import attribute_vectors, load_dataset
from ...io import atomic_write
from ...metrics.classifier import load_mnist_classifier
from .inputs import EditError, load_conditional_generator

ENCODER_FORMAT = "ganforge-encoder/1"
ENCODER_NAME = "encoder.pt"  # written beside the generator's checkpoint


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


def pick_encoder(G, ckpt_path, encoder, device, use_ema):
    """(encoder callable or None, what it is, its file or None) for ``encoder``: "vaegan" (a VAE-GAN's own), an
    encoder file, "auto" (the VAE-GAN's own, else encoder.pt beside the checkpoint when there is one), or None
    (optimisation alone)."""
    if encoder == "auto":
        if isinstance(G, VAEGANGenerator):
            encoder = "vaegan"
        else:
            encoder = encoder_path(ckpt_path) if encoder_path(ckpt_path).is_file() else None
    if encoder == "vaegan":
        info = {"kind": "the VAE-GAN's own, trained with G (in the checkpoint)", "use_ema": use_ema}
        return vaegan_encoder(require_vaegan(G, ckpt_path)), info, None
    if encoder is None:
        return None, None, None
    return (*load_encoder(encoder, G, device), encoder)


def reads_digits(G):
    """Whether the embedded digit classifier can read G's images (grey 28x28)."""
    return tuple(G.data_shape) == (1, 28, 28)


def feature_model(device="cpu"):
    """The project's digit classifier, frozen: its features give the perceptual term of the encoding loss."""
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
