"""kernels.gradient_penalty against a hand formula and the reference; a full WGAN-GP / R1 D step with the
kernels inside the critic gives the same weight gradients as the pure-PyTorch step."""
import importlib
import math

import pytest
import torch

from ganforge import models
from ganforge.kernels import gradient_penalty, gradient_penalty_ref

gp_module = importlib.import_module("ganforge.kernels.gradient_penalty")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
KINDS = ("wgan-gp", "r1")


def hand_penalty(grad, kind, weight, center):
    """The textbook formula, one sample at a time in Python floats."""
    terms = []
    for sample in grad.double().cpu():
        sq = sum(float(v) ** 2 for v in sample.flatten())
        terms.append(sq if kind == "r1" else (math.sqrt(sq) - center) ** 2)
    scale = weight / 2 if kind == "r1" else weight
    return scale * sum(terms) / len(terms)


def make_grad(shape, dtype, seed=0, channels_last=False):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 0.4
    g = g.to(DEVICE, dtype)
    return g.to(memory_format=torch.channels_last) if channels_last else g


@pytest.mark.parametrize("kind", KINDS)
def test_matches_hand_formula(kind):
    g = make_grad((5, 2, 3, 3), torch.float32, seed=1)
    got = gradient_penalty(g, kind=kind, weight=3.0, center=0.5, impl="triton")
    assert got.shape == () and got.dtype == torch.float32
    assert float(got) == pytest.approx(hand_penalty(g, kind, 3.0, 0.5), rel=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_forward_and_backward_match_reference(kind, dtype, channels_last):
    g0 = make_grad((4, 3, 5, 6), dtype, seed=2, channels_last=channels_last)
    g, gr = g0.clone().requires_grad_(True), g0.clone().requires_grad_(True)
    loss = gradient_penalty(g, kind=kind, impl="triton")
    expected = gradient_penalty_ref(gr, kind)
    assert loss.dtype == expected.dtype
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    (dg,) = torch.autograd.grad(loss, g)
    (dgr,) = torch.autograd.grad(expected, gr)
    assert dg.dtype == dtype and dg.stride() == g0.stride()
    tol = {torch.bfloat16: 1e-2, torch.float16: 1e-3}.get(dtype, 1e-5)
    torch.testing.assert_close(dg, dgr, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", KINDS)
def test_zero_gradient_sample_is_finite(kind):
    g = make_grad((3, 10), torch.float32, seed=3)
    g[1] = 0.0
    g.requires_grad_(True)
    loss = gradient_penalty(g, kind=kind, impl="triton")
    (dg,) = torch.autograd.grad(loss, g)
    assert torch.isfinite(loss) and torch.isfinite(dg).all()
    assert torch.equal(dg[1], torch.zeros_like(dg[1]))
    if kind == "wgan-gp":  # the zero sample contributes (0 - center)^2 = 1
        assert float(loss.detach()) == pytest.approx(hand_penalty(g.detach(), kind, 10.0, 1.0), rel=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_and_gradgradcheck_fp64(kind):
    g = make_grad((3, 2, 2, 2), torch.float64, seed=4).requires_grad_(True)
    fn = lambda g: gradient_penalty(g, kind=kind, weight=2.0, center=0.7, impl="triton")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (g,))
    # The backward is itself differentiable (its backward is torch ops), so second order holds too.
    assert torch.autograd.gradgradcheck(fn, (g,))


def test_upstream_gradient_scales_without_sync():
    """Loss scaling: the upstream gradient is read on the device, e.g. a GradScaler's scale."""
    g0 = make_grad((4, 7), torch.float16, seed=5)
    g = g0.clone().requires_grad_(True)
    scale = torch.tensor(1024.0, device=DEVICE)
    (gradient_penalty(g, impl="triton") * scale).backward()
    gr = g0.clone().requires_grad_(True)
    gradient_penalty_ref(gr).backward()
    torch.testing.assert_close(g.grad.float() / 1024, gr.grad.float(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_split_samples_across_programs(kind, monkeypatch):
    """Several chunks per sample (the small-N path on a big GPU), forced here with a small block."""
    monkeypatch.setattr(gp_module, "BLOCK", 16)
    monkeypatch.setattr(gp_module, "programs_target", lambda device, per_sm: 12)
    g0 = make_grad((3, 100), torch.float32, seed=6)
    assert gp_module._split(3, 100, g0.device) == (4, 2)  # 7 blocks of 16: 4 chunks of 2 steps
    g, gr = g0.clone().requires_grad_(True), g0.clone().requires_grad_(True)
    loss, expected = gradient_penalty(g, kind=kind, impl="triton"), gradient_penalty_ref(gr, kind)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(torch.autograd.grad(loss, g)[0], torch.autograd.grad(expected, gr)[0])


@pytest.mark.parametrize("kind", KINDS)
def test_exact_chunks_without_masks(kind, monkeypatch):
    monkeypatch.setattr(gp_module, "BLOCK", 16)
    g0 = make_grad((3, 2, 4, 4), torch.float32, seed=9)  # 32 elements a sample: two full blocks
    g, gr = g0.clone().requires_grad_(True), g0.clone().requires_grad_(True)
    loss, expected = gradient_penalty(g, kind=kind, impl="triton"), gradient_penalty_ref(gr, kind)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(torch.autograd.grad(loss, g)[0], torch.autograd.grad(expected, gr)[0])


@pytest.mark.parametrize("impl", ["ref", "triton"])
def test_bad_arguments_raise_value_error(impl):
    with pytest.raises(ValueError, match="unknown kind"):
        gradient_penalty(torch.randn(2, 3, device=DEVICE), kind="dragan", impl=impl)
    with pytest.raises(ValueError, match="floating"):
        gradient_penalty(torch.ones(2, 3, dtype=torch.int64, device=DEVICE), impl=impl)
    with pytest.raises(ValueError, match="floating"):
        gradient_penalty(torch.randn(5, device=DEVICE), impl=impl)


# ---- a whole discriminator step --------------------------------------------------------------------------

def d_step_grads(D, real, fake, mix, impl, kind):
    """One WGAN-GP (or R1) critic step; returns the loss and every parameter's gradient."""
    models.set_kernel_impl(D, impl)
    D.zero_grad(set_to_none=True)
    if kind == "wgan-gp":
        x_pen = torch.lerp(fake, real, mix).requires_grad_(True)  # mix * real + (1 - mix) * fake
    else:
        x_pen = real.clone().requires_grad_(True)
    loss = D(fake).mean() - D(real).mean()
    (grad,) = torch.autograd.grad(D(x_pen).sum(), x_pen, create_graph=True)
    loss = loss + gradient_penalty(grad, kind=kind, impl=impl)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in D.named_parameters()}


CRITICS = {
    "mlp": (lambda: models.MLPDiscriminator(data_shape=(1, 8, 8), hidden=(16, 16, 16)), (6, 1, 8, 8)),
    "dcgan": (lambda: models.DCGANDiscriminator(data_shape=(1, 28, 28), width=4), (3, 1, 28, 28)),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("critic", sorted(CRITICS))
def test_d_step_matches_pure_pytorch(critic, kind, dtype):
    build, shape = CRITICS[critic]
    torch.manual_seed(7)
    D = build().to(DEVICE, dtype)
    with torch.no_grad():  # non-zero biases, so the bias gradients are exercised in earnest
        for name, p in D.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
    real = torch.randn(shape, device=DEVICE, dtype=dtype)
    fake = torch.randn(shape, device=DEVICE, dtype=dtype)
    mix = torch.rand(shape[0], 1, 1, 1, device=DEVICE, dtype=dtype)
    loss_ref, grads_ref = d_step_grads(D, real, fake, mix, "ref", kind)
    loss_tri, grads_tri = d_step_grads(D, real, fake, mix, "triton", kind)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(loss_tri, loss_ref, rtol=tol, atol=tol)
    assert grads_tri.keys() == grads_ref.keys()
    for name in grads_ref:
        torch.testing.assert_close(grads_tri[name], grads_ref[name], rtol=tol, atol=tol, msg=name)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", KINDS)
def test_large_bf16_on_cuda(kind):
    g0 = make_grad((256, 3, 64, 64), torch.bfloat16, seed=8)
    g, gr = g0.clone().requires_grad_(True), g0.clone().requires_grad_(True)
    loss, expected = gradient_penalty(g, kind=kind, impl="triton"), gradient_penalty_ref(gr, kind)
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.autograd.grad(loss, g)[0], torch.autograd.grad(expected, gr)[0],
                               rtol=1e-2, atol=1e-2)


@pytest.mark.gpu
def test_cuda_graph_capture_replays_penalty():
    g = torch.randn(64, 3, 32, 32, device="cuda", requires_grad=True)

    def step():
        loss = gradient_penalty(g, impl="triton")
        return (loss,) + torch.autograd.grad(loss, g)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss, dg = step()
    with torch.no_grad():
        g.copy_(torch.randn_like(g))
    graph.replay()
    torch.cuda.synchronize()
    gr = g.detach().clone().requires_grad_(True)
    expected = gradient_penalty_ref(gr)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dg, torch.autograd.grad(expected, gr)[0], rtol=1e-5, atol=1e-6)
