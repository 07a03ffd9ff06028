"""VAE-GAN (Larsen et al. 2016): a variational encoder whose decoder is the GAN's generator.

The encoder E maps an image (and, when conditional, its class) to a diagonal Gaussian q(z | x) =
N(mu, diag(sigma^2)), given as (mu, log sigma^2); a code is drawn as z = mu + sigma * eps, eps ~ N(0, I). The
decoder is the ordinary MLP or DCGAN generator, which also generates from the prior N(0, I). One module holds
both (the decoder and the generator are one network), so whatever samples a generator (FID, augment,
interpolate, the EMA) calls its forward(z, labels) unchanged, and checkpoints and the optimizer carry the
encoder with it. The losses that train the pair are engine.losses.kl_divergence and feature_reconstruction.
"""
import torch
from torch import nn

from .conditioning import condition_embedding
from .dcgan import dcgan_feature_layers
from .layers import FusedLinear
from .mlp import mlp_feature_layers

BACKBONES = ("mlp", "dcgan")
LABEL_DIM = 64  # a conditional encoder sees its class as an embedding of this size beside the image features


class VAEEncoder(nn.Module):
    """Image (and class) -> (mu, log sigma^2), each (N, z_dim) in fp32: a critic-like body, then one dense layer."""

    def __init__(self, body, feature_dim, z_dim, num_classes=0, flatten_input=False, attribute_names=()):
        super().__init__()
        self.body, self.z_dim, self.flatten_input = body, z_dim, flatten_input
        self.label_embed = condition_embedding(num_classes, attribute_names, LABEL_DIM)
        self.head = FusedLinear(feature_dim + (LABEL_DIM if self.label_embed is not None else 0), 2 * z_dim)

    def forward(self, x, labels=None):
        h = self.body(x.flatten(1) if self.flatten_input else x).flatten(1)
        if self.label_embed is not None:
            h = torch.cat([h, self.label_embed(labels).to(h.dtype)], dim=1)
        mu, log_var = self.head(h).float().chunk(2, dim=1)  # fp32: sigma = exp(log_var / 2) must not overflow
        return mu, log_var


def build_encoder(backbone, data_shape, z_dim, width, num_classes=0, attribute_names=()):
    """The encoder for a VAE-GAN on ``backbone``: the body of that backbone's critic at the same width."""
    if backbone == "mlp":
        body, feature_dim = mlp_feature_layers(data_shape, (8 * width, 4 * width, 2 * width))
        return VAEEncoder(body, feature_dim, z_dim, num_classes, flatten_input=True, attribute_names=attribute_names)
    if backbone == "dcgan":
        body, feature_dim = dcgan_feature_layers(data_shape, width)
        return VAEEncoder(body, feature_dim, z_dim, num_classes, attribute_names=attribute_names)
    raise ValueError(f"unknown VAE-GAN backbone {backbone!r}; expected one of {BACKBONES}")


class VAEGANGenerator(nn.Module):
    """The decoder (= generator) and its encoder. forward(z, labels) decodes, as every generator does."""

    def __init__(self, decoder, encoder):
        super().__init__()
        self.decoder, self.encoder = decoder, encoder
        self.data_shape, self.z_dim, self.num_classes = decoder.data_shape, decoder.z_dim, decoder.num_classes
        self.attribute_names = decoder.attribute_names

    def forward(self, z, labels=None):
        return self.decoder(z, labels)

    def encode(self, x, labels=None):
        """(mu, log sigma^2) of q(z | x), fp32."""
        return self.encoder(x, labels)

    @staticmethod
    def draw(mu, log_var, eps):
        """The reparameterised code mu + sigma * eps (differentiable in mu and log_var)."""
        return mu + torch.exp(0.5 * log_var) * eps
