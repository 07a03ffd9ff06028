"""Plain floats (activation slope, gain, clamp, penalty weight, centre) are runtime arguments of the Triton kernels,
so a new value reuses the compiled kernel; tl.constexpr is kept for what selects code (activation, branches,
dtype, tile sizes). On the CPU the interpreter compiles nothing, so the kernels' signatures are read; on a GPU
the compile cache is counted."""
import importlib
import inspect

import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

from ganforge.kernels import bias_act, gradient_penalty  # noqa: E402

# the modules (the package's names bias_act and gradient_penalty are the ops)
bias_act_module = importlib.import_module("ganforge.kernels.bias_act")
gp_module = importlib.import_module("ganforge.kernels.gradient_penalty")

SCALARS = {
    bias_act_module._bias_act_fwd_kernel: ("alpha", "gain", "clamp"),
    bias_act_module._bias_act_bwd_kernel: ("alpha", "gain", "clamp"),
    gp_module._gp_finalize_kernel: ("weight", "center"),
    gp_module._gp_bwd_kernel: ("weight", "center"),
}


def parameters(kernel):
    return inspect.signature(kernel.fn).parameters


@pytest.mark.parametrize("kernel", list(SCALARS), ids=lambda k: k.fn.__name__)
def test_float_scalars_are_runtime_arguments(kernel):
    params = parameters(kernel)
    for name in SCALARS[kernel]:
        assert name in params and params[name].annotation is not tl.constexpr, name
    constexprs = [n for n, p in params.items() if p.annotation is tl.constexpr]
    assert constexprs and all(n.isupper() for n in constexprs)  # the code selectors, in capitals


def compiled_variants(kernel):
    """How many compiled variants the JIT's cache holds for ``kernel`` (every device together)."""
    caches = getattr(kernel, "device_caches", None)
    if caches is not None:  # triton >= 3.0: device -> (kernel cache, ...)
        return sum(len(entry[0]) for entry in caches.values())
    return sum(len(c) for c in kernel.cache.values())


@pytest.mark.gpu
def test_two_penalty_weights_share_one_compiled_kernel():
    grad = torch.randn(64, 3, 32, 32, device="cuda", requires_grad=True)
    kernels = (gp_module._gp_finalize_kernel, gp_module._gp_bwd_kernel)
    gradient_penalty(grad, kind="wgan-gp", weight=10.0, impl="triton").backward()  # compiles both kernels
    before = [compiled_variants(k) for k in kernels]
    for weight, center in ((3.0, 1.0), (0.5, 0.7), (12.5, 1.0)):
        grad.grad = None
        value = gradient_penalty(grad, kind="wgan-gp", weight=weight, center=center, impl="triton")
        value.backward()
        reference = gradient_penalty(grad.detach(), kind="wgan-gp", weight=weight, center=center, impl="ref")
        torch.testing.assert_close(value, reference, rtol=1e-5, atol=1e-6)
    torch.cuda.synchronize()
    assert [compiled_variants(k) for k in kernels] == before


@pytest.mark.gpu
def test_two_slopes_share_one_compiled_bias_act_kernel():
    x = torch.randn(64, 128, device="cuda", requires_grad=True)
    b = torch.randn(128, device="cuda", requires_grad=True)
    bias_act(x, b, act="lrelu", alpha=0.2, impl="triton").sum().backward()
    kernels = (bias_act_module._bias_act_fwd_kernel, bias_act_module._bias_act_bwd_kernel)
    before = [compiled_variants(k) for k in kernels]
    for alpha, gain in ((0.1, 1.0), (0.3, 2.0 ** 0.5)):
        bias_act(x, b, act="lrelu", alpha=alpha, gain=gain, impl="triton").sum().backward()
    torch.cuda.synchronize()
    assert [compiled_variants(k) for k in kernels] == before
