"""The textbook MLP GAN: G maps z through 128, 256, 512 to the data; D maps the data through 512, 256, 128."""
import math

import torch
from torch import nn

from .conditioning import condition_embedding
from .critic import ProjectionCritic
from .layers import FusedLinear


class MLPGenerator(nn.Module):
    """ReLU MLP from z to the data. BatchNorm on the hidden layers keeps G from losing the early race
    against D (without it the textbook G collapses to noise on MNIST-5k within the default run)."""

    def __init__(self, data_shape=(1, 28, 28), z_dim=100, hidden=(128, 256, 512), num_classes=0,
                 out_act="tanh", batch_norm=True, attribute_names=()):
        super().__init__()
        self.data_shape, self.z_dim, self.num_classes = tuple(data_shape), z_dim, num_classes
        self.attribute_names = tuple(attribute_names)
        self.label_embed = condition_embedding(num_classes, attribute_names, z_dim, bank=True)
        in_dim = z_dim * 2 if self.label_embed is not None else z_dim
        layers = []
        for width in hidden:
            layers.append(FusedLinear(in_dim, width, act="relu", norm=batch_norm))
            in_dim = width
        layers.append(FusedLinear(in_dim, math.prod(self.data_shape), act=out_act))
        self.net = nn.Sequential(*layers)

    def forward(self, z, labels=None):
        if self.label_embed is not None:
            z = torch.cat([z, self.label_embed(labels)], dim=1)
        return self.net(z).reshape(z.shape[0], *self.data_shape)


def mlp_feature_layers(data_shape, hidden):
    """(leaky-ReLU dense layers from the flattened data through ``hidden``, their output width): the body of
    the MLP critic and of the VAE-GAN's MLP encoder."""
    in_dim = math.prod(data_shape)
    layers = []
    for width in hidden:
        layers.append(FusedLinear(in_dim, width, act="lrelu", alpha=0.2))
        in_dim = width
    return nn.Sequential(*layers), in_dim


class MLPDiscriminator(ProjectionCritic):
    """Leaky-ReLU MLP to one logit; conditional by projection (logit += <embed(y), features>)."""

    def __init__(self, data_shape=(1, 28, 28), hidden=(512, 256, 128), num_classes=0, attribute_names=()):
        super().__init__()
        self.num_classes, self.attribute_names = num_classes, tuple(attribute_names)
        self.features, in_dim = mlp_feature_layers(data_shape, hidden)
        self.head = FusedLinear(in_dim, 1)
        self.label_embed = condition_embedding(num_classes, attribute_names, in_dim)

    def features_input(self, x):
        return x.reshape(x.shape[0], -1)
