"""pytest-benchmark entries for every op of kernels/: forward, backward and both, per implementation.

    pytest bench/benchmarks/test_kernels.py --benchmark-only

"ref" is the plain-PyTorch reference (eager), "compile" the reference under torch.compile (GPU only: the CPU
compiler takes minutes), "triton" the ganforge kernel (on CPU through the interpreter, at tiny sizes only).
"""
import functools

import pytest
import torch

from ganforge import kernels
from ganforge.bench.timing import synchronized

PASSES = ("forward", "backward", "both")
IMPLS = ("ref", "compile", "triton")


def _sizes(on_gpu):
    if on_gpu:
        return {"2d": (8192, 4096), "4d": (256, 128, 32, 32)}
    return {"2d": (64, 256), "4d": (8, 16, 8, 8)}


def _op(name, impl):
    """The callable under test: (inputs...) -> output, for one implementation."""
    if name == "bias_act":
        ref = functools.partial(kernels.bias_act_ref, act="lrelu", alpha=0.2)
        fast = functools.partial(kernels.bias_act, act="lrelu", alpha=0.2, impl="triton")
    else:
        ref = functools.partial(kernels.gradient_penalty_ref, kind="wgan-gp", weight=10.0, center=1.0)
        fast = functools.partial(kernels.gradient_penalty, kind="wgan-gp", weight=10.0, center=1.0, impl="triton")
    if impl == "ref":
        return ref
    if impl == "compile":
        return torch.compile(ref, dynamic=False)
    return fast


def _inputs(name, shape, device, dtype):
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(shape, generator=gen, dtype=torch.float32).to(device, dtype).requires_grad_(True)
    if name == "bias_act":
        b = torch.randn(shape[1], generator=gen).to(device, dtype).requires_grad_(True)
        return (x, b)
    return (x,)


def _skip_unsupported(impl, on_gpu):
    if impl == "compile" and not on_gpu:
        pytest.skip("torch.compile of the reference is benchmarked on GPU only (CPU compile takes minutes)")


@pytest.mark.parametrize("layout", ("2d", "4d"))
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("name", ("bias_act", "gradient_penalty"))
def test_kernel(benchmark, name, pass_, impl, layout, device, on_gpu, monkeypatch):
    _skip_unsupported(impl, on_gpu)
    if impl == "compile":
        # The backward-only timing differentiates one graph repeatedly (retain_graph=True), which compiled
        # backwards with donated buffers refuse; the flag is read when the function is compiled.
        import torch._functorch.config as functorch_config
        monkeypatch.setattr(functorch_config, "donated_buffer", False, raising=False)
    dtype = torch.bfloat16 if on_gpu else torch.float32
    shape = _sizes(on_gpu)[layout]
    inputs = _inputs(name, shape, device, dtype)
    op = _op(name, impl)
    try:
        out = op(*inputs)
    except (ImportError, NotImplementedError) as exc:
        pytest.skip(f"{name} impl={impl} is not available here: {exc}")
    grad_out = torch.randn_like(out)

    if pass_ == "forward":
        def fn():
            with torch.no_grad():
                return op(*inputs)
    elif pass_ == "backward":
        def fn():  # the same graph, differentiated again and again
            return torch.autograd.grad(out, inputs, grad_out, retain_graph=True)
    else:
        def fn():
            return torch.autograd.grad(op(*inputs), inputs, grad_out)

    fn()  # compile / autotune / first-launch work stays out of the timing
    numel = inputs[0].numel()
    benchmark.extra_info.update(op=name, pass_=pass_, impl=impl, shape=list(shape), dtype=str(dtype), numel=numel)
    benchmark.group = f"{name} {pass_} {layout}"
    benchmark(synchronized(fn, device))
