"""Shapes and dtypes of every model, conditional variants, and the textbook layer widths."""
import pytest
import torch

from ganforge import models
from ganforge.models import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator, build_models
from ganforge.models.layers import FusedConv2d, FusedLinear

SHAPES = [("mlp", (1, 28, 28)), ("mlp", (2,)), ("dcgan", (1, 28, 28)), ("dcgan", (3, 32, 32)),
          ("dcgan", (3, 64, 64))]


@pytest.mark.parametrize("name,shape", SHAPES)
@pytest.mark.parametrize("num_classes", [0, 10])
def test_generator_and_discriminator_shapes(name, shape, num_classes):
    G, D = build_models(name, shape, z_dim=100, num_classes=num_classes, width=8)
    z = torch.randn(3, 100)
    labels = torch.randint(0, 10, (3,)) if num_classes else None
    x = G(z, labels)
    assert x.shape == (3, *shape) and x.dtype == torch.float32
    if len(shape) == 3:  # images come out of a tanh
        assert x.abs().max() <= 1
    logits = D(x, labels)
    assert logits.shape == (3,) and logits.dtype == torch.float32


@pytest.mark.parametrize("name,shape", [("mlp", (1, 28, 28)), ("dcgan", (3, 32, 32))])
def test_models_under_bf16_autocast(name, shape):
    G, D = build_models(name, shape, width=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = G(torch.randn(2, 100))
        logits = D(x)
    assert x.dtype == torch.bfloat16 and logits.shape == (2,)


def test_textbook_mlp_widths():
    G, D = MLPGenerator(), MLPDiscriminator()
    g_layers = [m for m in G.modules() if isinstance(m, FusedLinear)]
    d_layers = [m for m in D.modules() if isinstance(m, FusedLinear)]
    assert [tuple(m.weight.shape) for m in g_layers] == [(128, 100), (256, 128), (512, 256), (784, 512)]
    assert [m.act for m in g_layers] == ["relu", "relu", "relu", "tanh"]
    assert [tuple(m.weight.shape) for m in d_layers] == [(512, 784), (256, 512), (128, 256), (1, 128)]
    assert [m.act for m in d_layers] == ["lrelu", "lrelu", "lrelu", "linear"]


def test_mlp_width_scales_every_hidden_layer():
    """--width w: G's hidden layers 2w, 4w, 8w and D's the reverse; the default 64 is the textbook's."""
    for width, expected in ((64, (128, 256, 512)), (128, (256, 512, 1024)), (8, (16, 32, 64))):
        G, D = build_models("mlp", (1, 28, 28), width=width)
        assert [m.weight.shape[0] for m in G.modules() if isinstance(m, FusedLinear)][:-1] == list(expected)
        assert [m.weight.shape[0] for m in D.modules() if isinstance(m, FusedLinear)][:-1] == list(expected[::-1])


def test_dcgan_batchnorm_placement():
    G = DCGANGenerator((1, 28, 28), width=8)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in G.modules())
    D_plain = DCGANDiscriminator((1, 28, 28), width=8, batch_norm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in D_plain.modules())
    _, D_gp = build_models("dcgan", (1, 28, 28), width=8, d_batch_norm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in D_gp.modules())
    D_bn = DCGANDiscriminator((1, 28, 28), width=8, batch_norm=True)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in D_bn.modules())


def test_conditional_generator_depends_on_label():
    G = MLPGenerator(num_classes=10)
    z = torch.randn(1, 100).expand(2, -1)
    x = G(z, torch.tensor([3, 7]))
    assert not torch.allclose(x[0], x[1])


def test_conditional_discriminator_projection_uses_label():
    D = MLPDiscriminator(num_classes=10)
    x = torch.randn(1, 1, 28, 28).expand(2, -1, -1, -1)
    torch.nn.init.normal_(D.label_embed.weight)
    logits = D(x, torch.tensor([0, 1]))
    assert not torch.isclose(logits[0], logits[1])


def test_fused_layers_match_unfused_math():
    lin = FusedLinear(5, 4, act="lrelu", alpha=0.1)
    x = torch.randn(6, 5)
    expected = torch.nn.functional.leaky_relu(x @ lin.weight.T + lin.bias, 0.1)
    torch.testing.assert_close(lin(x), expected)
    conv = FusedConv2d(3, 4, 3, padding=1, act="relu")
    torch.nn.init.normal_(conv.bias)
    img = torch.randn(2, 3, 5, 5)
    expected = torch.relu(torch.nn.functional.conv2d(img, conv.conv.weight, conv.bias, padding=1))
    torch.testing.assert_close(conv(img), expected)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        build_models("resnet", (1, 28, 28))
    with pytest.raises(ValueError, match="image sizes"):
        build_models("dcgan", (3, 48, 48))
    with pytest.raises(ValueError, match="image data"):
        build_models("dcgan", (2,))
    with pytest.raises(ValueError, match="vaegan encodes images"):
        build_models("vaegan", (2,))
    with pytest.raises(ValueError, match="unknown VAE-GAN backbone"):
        build_models("vaegan", (1, 28, 28), backbone="resnet")
    assert set(models.MODEL_NAMES) == {"mlp", "dcgan", "vaegan"}
