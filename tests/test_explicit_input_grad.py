"""The explicit input gradient (first-order ops) equals autograd's double backward exactly, and falls back safely.

fp64, assert_close's fp64 tolerances: the penalty value, the scores and every weight gradient, for the MLP and
DCGAN critics (28/32/64, conditional or not), WGAN-GP, R1, R2 and R1 + R2, with and without spectral norm, on the
reference kernels and on the Triton kernels (through the interpreter on CPU: tiny widths and batches keep each
launch to one or two programs).
"""
import zlib

import pytest
import torch
from torch import nn

from ganforge.engine import losses
from ganforge.engine.config import TrainConfig
from ganforge.engine.data import Dataset
from ganforge.engine.session import build_session, run_iteration
from ganforge.models import (DCGANDiscriminator, MLPDiscriminator, build_models, set_kernel_impl,
                             spectral_norm_layers)

CRITICS = {  # name -> (model, data shape, conditional)
    "mlp": ("mlp", (1, 28, 28), False),
    "mlp-cond": ("mlp", (1, 28, 28), True),
    "dcgan-28": ("dcgan", (1, 28, 28), False),
    "dcgan-32-cond": ("dcgan", (3, 32, 32), True),
    "dcgan-64": ("dcgan", (3, 64, 64), False),
}


def make_critic(name, impl, seed=0, spectral_norm=False):
    model, shape, conditional = CRITICS[name]
    torch.manual_seed(seed)
    _, D = build_models(model, shape, num_classes=10 if conditional else 0, width=2, impl=impl,
                        spectral_norm=spectral_norm)
    for p in D.parameters():  # DCGAN's N(0, 0.02) init makes tiny gradients; larger weights test more digits
        with torch.no_grad():
            p.normal_(0.0, 0.3)
    D = D.double()
    for layer in spectral_norm_layers(D):  # singular vectors of the new weights, as the D steps keep them
        for _ in range(3):
            layer.power_iteration_()
    return D, shape, conditional


def penalty_and_grads(D, method, kind, real, fake, labels, alpha, impl):
    """The penalty (plus the scores R1 returns, so they are checked too) and d/d every parameter of D."""
    if kind == "wgan-gp":
        value = losses.wgan_gp_penalty(D, real, fake, labels, weight=10.0, alpha=alpha, impl=impl,
                                       grad_method=method)
        scores = torch.zeros(())
    elif kind == "r1":
        value, scores = losses.r1_penalty(D, real, labels, gamma=10.0, impl=impl, grad_method=method)
    elif kind == "r2":
        value, scores = losses.r2_penalty(D, fake, labels, gamma=10.0, impl=impl, grad_method=method)
    else:  # r1+r2, as the D step adds them
        r1, real_scores = losses.r1_penalty(D, real, labels, gamma=10.0, impl=impl, grad_method=method)
        r2, fake_scores = losses.r2_penalty(D, fake, labels, gamma=10.0, impl=impl, grad_method=method)
        value, scores = r1 + r2, torch.cat([real_scores, fake_scores])
    params = list(D.parameters())
    grads = torch.autograd.grad(value + 0.1 * scores.sum(), params, allow_unused=True)
    return value, scores, [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def check_equal(name, kind, impl, batch=3, spectral_norm=False):
    D, shape, conditional = make_critic(name, impl, spectral_norm=spectral_norm)
    gen = torch.Generator().manual_seed(zlib.crc32(f"{name}/{kind}".encode()) % 1000)  # not the salted hash()
    real = torch.randn(batch, *shape, generator=gen, dtype=torch.float64)
    fake = torch.randn(batch, *shape, generator=gen, dtype=torch.float64)
    alpha = torch.rand(batch, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 10, (batch,), generator=gen) if conditional else None
    assert D.supports_input_grad()
    auto = penalty_and_grads(D, "autograd", kind, real, fake, labels, alpha, impl)
    explicit = penalty_and_grads(D, "explicit", kind, real, fake, labels, alpha, impl)
    assert auto[0].item() > 0
    torch.testing.assert_close(explicit[0], auto[0])
    torch.testing.assert_close(explicit[1], auto[1])
    assert any(g.abs().max() > 0 for g in auto[2])
    for (pname, _), ge, ga in zip(D.named_parameters(), explicit[2], auto[2]):
        torch.testing.assert_close(ge, ga, msg=lambda m: f"{pname}: {m}")


@pytest.mark.parametrize("spectral_norm", (False, True), ids=("plain", "spectral-norm"))
@pytest.mark.parametrize("kind", ("wgan-gp", "r1", "r2", "r1+r2"))
@pytest.mark.parametrize("name", tuple(CRITICS))
def test_explicit_equals_double_backward_reference_kernels(name, kind, spectral_norm):
    check_equal(name, kind, "ref", spectral_norm=spectral_norm)


@pytest.mark.parametrize("kind,spectral_norm", (("wgan-gp", False), ("r1", False), ("r1+r2", True)))
@pytest.mark.parametrize("name", ("mlp-cond", "dcgan-28"))
def test_explicit_equals_double_backward_triton_kernels(name, kind, spectral_norm):
    check_equal(name, kind, "triton", batch=2, spectral_norm=spectral_norm)


def test_layers_input_grad_matches_autograd_including_odd_sizes_and_transposed():
    """Strided convolutions whose input size leaves a remainder need output padding; transposed convs too."""
    from ganforge.models.layers import FusedConv2d, FusedLinear

    torch.manual_seed(1)
    for layer, x_shape in ((FusedConv2d(2, 3, 4, 2, 1, act="lrelu"), (2, 2, 9, 7)),
                           (FusedConv2d(2, 3, 3, 2, 0, act="relu"), (2, 2, 8, 8)),
                           (FusedConv2d(2, 3, 4, 2, 1, act="lrelu", transposed=True), (2, 2, 5, 5)),
                           (FusedLinear(7, 5, act="relu"), (4, 7))):
        layer = set_kernel_impl(layer.double(), "ref")
        x = torch.randn(x_shape, dtype=torch.float64, requires_grad=True)
        y, slope = layer.forward_with_slope(x)
        upstream = torch.randn_like(y)
        (expected,) = torch.autograd.grad((layer(x) * upstream).sum(), x)
        torch.testing.assert_close(y, layer(x))
        torch.testing.assert_close(layer.input_grad(upstream, slope, x.shape), expected)


def test_fallback_for_critics_that_cannot():
    _, bn_critic = build_models("dcgan", (1, 28, 28), width=2, d_batch_norm=True)
    smooth = MLPDiscriminator((1, 4, 4), hidden=(8,))
    smooth.features[0].act = "tanh"
    foreign = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))

    class Rewired(DCGANDiscriminator):
        def forward(self, x, labels=None):
            return super().forward(x * 2, labels)

    for critic in (bn_critic, smooth, foreign, Rewired((1, 28, 28), width=2)):
        assert losses.resolve_penalty_grad(critic, "auto") == "autograd"
        with pytest.raises(ValueError, match="--penalty-grad explicit"):
            losses.resolve_penalty_grad(critic, "explicit")
    with pytest.raises(ValueError, match="double backward"):
        bn_critic.scores_and_input_grad(torch.randn(2, 1, 28, 28))
    assert losses.resolve_penalty_grad(MLPDiscriminator(), "auto") == "explicit"
    assert losses.resolve_penalty_grad(MLPDiscriminator(), "autograd") == "autograd"
    with pytest.raises(ValueError, match="--penalty-grad must be one of"):
        TrainConfig(penalty_grad="fast").validate()


def _train_weights(penalty_grad, compile_backend=None, **overrides):
    gen = torch.Generator().manual_seed(0)
    data = Dataset(torch.rand((64, 1, 28, 28), generator=gen) * 2 - 1, torch.randint(0, 10, (64,), generator=gen),
                   10, "synthetic")
    cfg = TrainConfig(model="dcgan", width=4, batch_size=4, iterations=2, kernels="ref", progress=False,
                      loss="wgan", penalty_grad=penalty_grad, seed=3, **overrides)
    session = build_session(cfg, dataset=data)
    if compile_backend:
        session.state.compile_steps(compile_backend)
    for i in range(cfg.iterations):
        run_iteration(session, i)
    state = session.state
    return state.penalty_grad, [p.detach().clone() for p in (*state.D.parameters(), *state.G.parameters())]


@pytest.mark.parametrize("overrides", (dict(penalty="wgan-gp", n_critic=2, penalty_every=3),
                                       dict(penalty="r1", conditional=True, penalty_every=2)))
def test_training_steps_give_the_same_weights_on_both_paths(overrides):
    method_a, weights_a = _train_weights("autograd", **overrides)
    method_e, weights_e = _train_weights("explicit", **overrides)
    assert (method_a, method_e) == ("autograd", "explicit")
    for a, e in zip(weights_a, weights_e):
        torch.testing.assert_close(e, a, rtol=1e-4, atol=1e-5)


def test_a_training_run_picks_explicit_with_a_penalty_and_no_input_gradient_without():
    """(The refusal of explicit on a BatchNorm critic is test_fallback_for_critics_that_cannot above.)"""
    assert _train_weights("auto", penalty="wgan-gp")[0] == "explicit"
    assert _train_weights("auto", penalty="none")[0] is None  # no penalty: no input gradient, D keeps BatchNorm


@pytest.mark.slow
def test_compiled_first_order_penalised_step_matches_eager():
    """torch.compile traces the explicit-penalty D step (no double backward left). Dynamo's own "eager" backend
    keeps Inductor's CPU build out of CI; Inductor's speed is a GPU measurement."""
    torch._dynamo.reset()
    try:
        _, compiled = _train_weights("explicit", compile_backend="eager", penalty="wgan-gp")
    finally:
        torch._dynamo.reset()
    _, eager = _train_weights("explicit", penalty="wgan-gp")
    for c, e in zip(compiled, eager):
        torch.testing.assert_close(c, e, rtol=1e-4, atol=1e-5)


def test_compile_refuses_a_double_backward_penalty():
    with pytest.raises(ValueError, match="--compile with a penalty"):
        _train_weights("autograd", penalty="r1", compile=True)
