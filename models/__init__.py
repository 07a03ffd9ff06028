"""Generators and discriminators built from the fused layers of models.layers."""
from .dcgan import DCGANDiscriminator, DCGANGenerator
from .mlp import MLPDiscriminator, MLPGenerator

MODEL_NAMES = ("mlp", "dcgan")


def build_models(name, data_shape, z_dim=100, num_classes=0, width=64, d_batch_norm=False):
    """Return (G, D) for ``name`` in MODEL_NAMES; ``num_classes > 0`` makes both conditional."""
    if name == "mlp":
        out_act = "tanh" if len(data_shape) == 3 else "linear"  # images live in [-1, 1]; 2-D points do not
        return (MLPGenerator(data_shape, z_dim, num_classes=num_classes, out_act=out_act),
                MLPDiscriminator(data_shape, num_classes=num_classes))
    if name == "dcgan":
        if len(data_shape) != 3:
            raise ValueError(f"dcgan needs image data (C, H, W), got data shape {tuple(data_shape)}")
        return (DCGANGenerator(data_shape, z_dim, width, num_classes),
                DCGANDiscriminator(data_shape, width, num_classes, batch_norm=d_batch_norm))
    raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")


__all__ = ["MLPGenerator", "MLPDiscriminator", "DCGANGenerator", "DCGANDiscriminator", "build_models",
           "MODEL_NAMES"]
