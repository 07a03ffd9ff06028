"""DCGAN generator and discriminator for 28x28 (grey), 32x32 and 64x64 images.

G: z -> dense to (base x base) -> stride-2 transposed convolutions doubling the size -> tanh.
D: stride-2 convolutions halving the size -> dense to one logit. BatchNorm in G always; in D only when asked
(never with a gradient penalty, whose per-sample gradients batch statistics would mix).
"""
import torch
from torch import nn

from .conditioning import condition_embedding
from .critic import ProjectionCritic
from .layers import FusedConv2d, FusedLinear

SUPPORTED_SIZES = (28, 32, 64)


def _base_and_steps(size):
    if size not in SUPPORTED_SIZES:
        raise ValueError(f"DCGAN supports image sizes {SUPPORTED_SIZES}, got {size}")
    base = 7 if size == 28 else 4
    n_blocks = {28: 2, 32: 3, 64: 4}[size]
    return base, n_blocks


class DCGANGenerator(nn.Module):
    def __init__(self, data_shape=(1, 28, 28), z_dim=100, width=64, num_classes=0, attribute_names=()):
        super().__init__()
        channels, size = data_shape[0], data_shape[-1]
        self.data_shape, self.z_dim, self.num_classes = tuple(data_shape), z_dim, num_classes
        self.attribute_names = tuple(attribute_names)
        self.base, n_blocks = _base_and_steps(size)
        self.top_ch = width * 2 ** (n_blocks - 1)
        self.label_embed = condition_embedding(num_classes, attribute_names, z_dim, bank=True)
        in_dim = z_dim * 2 if self.label_embed is not None else z_dim
        self.project = FusedLinear(in_dim, self.top_ch * self.base * self.base, bias=False)
        self.project_norm = nn.BatchNorm2d(self.top_ch)
        blocks, ch = [], self.top_ch
        for _ in range(n_blocks - 1):
            blocks.append(FusedConv2d(ch, ch // 2, 4, 2, 1, act="relu", transposed=True, norm=True))
            ch //= 2
        blocks.append(FusedConv2d(ch, channels, 4, 2, 1, act="tanh", transposed=True))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z, labels=None):
        if self.label_embed is not None:
            z = torch.cat([z, self.label_embed(labels)], dim=1)
        x = self.project(z).reshape(z.shape[0], self.top_ch, self.base, self.base)
        x = torch.relu(self.project_norm(x))
        return self.blocks(x)


def dcgan_feature_layers(data_shape, width, batch_norm=False):
    """(stride-2 leaky-ReLU convolutions halving the image down to the base size, their flattened output size):
    the body of the DCGAN critic and of the VAE-GAN's convolutional encoder."""
    channels, size = data_shape[0], data_shape[-1]
    base, n_blocks = _base_and_steps(size)
    blocks, ch = [FusedConv2d(channels, width, 4, 2, 1, act="lrelu")], width
    for _ in range(n_blocks - 1):
        blocks.append(FusedConv2d(ch, ch * 2, 4, 2, 1, act="lrelu", norm=batch_norm))
        ch *= 2
    return nn.Sequential(*blocks), ch * base * base


class DCGANDiscriminator(ProjectionCritic):
    def __init__(self, data_shape=(1, 28, 28), width=64, num_classes=0, batch_norm=False, attribute_names=()):
        super().__init__()
        self.num_classes, self.attribute_names = num_classes, tuple(attribute_names)
        self.features, feat_dim = dcgan_feature_layers(data_shape, width, batch_norm)
        self.head = FusedLinear(feat_dim, 1)
        self.label_embed = condition_embedding(num_classes, attribute_names, feat_dim)
