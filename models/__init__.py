"""Generators and discriminators built from the fused layers of models.layers."""
from ..kernels import IMPLS
from .conditioning import AttributeEmbedding, attribute_embedding, draw_attributes, set_attribute_bank
from .dcgan import DCGANDiscriminator, DCGANGenerator
from .layers import FusedConv2d, FusedLinear
from .mlp import MLPDiscriminator, MLPGenerator
from .vaegan import BACKBONES, VAEGANGenerator, build_encoder

MODEL_NAMES = ("mlp", "dcgan", "vaegan")


def set_kernel_impl(module, impl):
    """Make every fused layer in ``module`` run its kernels with ``impl`` ("auto", "triton" or "ref")."""
    if impl not in IMPLS:
        raise ValueError(f"kernels impl must be one of {IMPLS}, got {impl!r}")
    for layer in module.modules():
        if isinstance(layer, (FusedLinear, FusedConv2d)):
            layer.impl = impl
    return module


def enable_spectral_norm(module):
    """Spectrally normalise the weight of every fused layer in ``module`` (Miyato et al. 2018); returns the
    layers, whose ``power_iteration_()`` the D step calls. A label embedding is left as it is."""
    layers = [layer for layer in module.modules() if isinstance(layer, (FusedLinear, FusedConv2d))]
    for layer in layers:
        layer.enable_spectral_norm()
    return layers


def spectral_norm_layers(module):
    """The fused layers of ``module`` that normalise their weight spectrally."""
    return [layer for layer in module.modules()
            if isinstance(layer, (FusedLinear, FusedConv2d)) and layer.spectral is not None]


def build_models(name, data_shape, z_dim=100, num_classes=0, width=64, d_batch_norm=False, impl="auto",
                 spectral_norm=False, backbone="mlp", attribute_names=()):
    """Return (G, D) for ``name`` in MODEL_NAMES; ``num_classes > 0`` makes both conditional on a class, a tuple of
    ``attribute_names`` on a vector of those binary attributes (models.conditioning); ``width`` is DCGAN's
    base channel count and a quarter of the MLP's narrowest hidden layer (2w, 4w, 8w in G, reversed in D);
    ``impl`` is the kernel choice of every fused layer; ``spectral_norm`` normalises D's layers. A "vaegan" is
    the ``backbone`` model's G and D with an encoder into G's latent space (G then a VAEGANGenerator)."""
    if name == "vaegan":
        if backbone not in BACKBONES:
            raise ValueError(f"unknown VAE-GAN backbone {backbone!r}; expected one of {BACKBONES}")
        if len(data_shape) != 3:
            raise ValueError(f"vaegan encodes images (C, H, W), got data shape {tuple(data_shape)}")
        decoder, D = build_models(backbone, data_shape, z_dim, num_classes, width, d_batch_norm, impl, spectral_norm,
                                  attribute_names=attribute_names)
        encoder = build_encoder(backbone, data_shape, z_dim, width, num_classes, attribute_names)
        return set_kernel_impl(VAEGANGenerator(decoder, encoder), impl), D
    if name == "mlp":
        out_act = "tanh" if len(data_shape) == 3 else "linear"  # images live in [-1, 1]; 2-D points do not
        hidden = (2 * width, 4 * width, 8 * width)  # width 64: the textbook's 128, 256, 512
        G = MLPGenerator(data_shape, z_dim, hidden, num_classes=num_classes, out_act=out_act,
                         attribute_names=attribute_names)
        D = MLPDiscriminator(data_shape, hidden[::-1], num_classes=num_classes, attribute_names=attribute_names)
    elif name == "dcgan":
        if len(data_shape) != 3:
            raise ValueError(f"dcgan needs image data (C, H, W), got data shape {tuple(data_shape)}")
        G = DCGANGenerator(data_shape, z_dim, width, num_classes, attribute_names)
        D = DCGANDiscriminator(data_shape, width, num_classes, batch_norm=d_batch_norm, attribute_names=attribute_names)
    else:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    if spectral_norm:
        enable_spectral_norm(D)
    return set_kernel_impl(G, impl), set_kernel_impl(D, impl)


__all__ = ["MLPGenerator", "MLPDiscriminator", "DCGANGenerator", "DCGANDiscriminator", "VAEGANGenerator",
           "build_models", "BACKBONES", "MODEL_NAMES", "set_kernel_impl", "enable_spectral_norm",
           "spectral_norm_layers", "AttributeEmbedding", "attribute_embedding", "draw_attributes",
           "set_attribute_bank"]
