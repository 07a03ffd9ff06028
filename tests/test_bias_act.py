"""kernels.bias_act: Triton path against the plain-PyTorch reference, first and second order.

Without CUDA the kernels run through Triton's interpreter (tests/conftest.py turns it on), so shapes stay tiny.
"""
import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ganforge import kernels
from ganforge.kernels import ACTIVATIONS, bias_act, bias_act_ref

ba_module = importlib.import_module("ganforge.kernels.bias_act")  # the package attribute is the function

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
LAYOUTS = ("2d", "nchw", "nhwc")
# (rtol, atol) against a reference evaluated in fp32 (fp64 for fp64): bf16 / fp16 outputs carry one rounding.
TOL = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-10, 1e-12),
       torch.bfloat16: (2e-2, 2e-2), torch.float16: (2e-3, 2e-3)}


def make_x(layout, dtype, shape=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shape = shape or ((5, 7) if layout == "2d" else (2, 3, 4, 5))
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(device=DEVICE, dtype=dtype)
    if layout == "nhwc":
        x = x.to(memory_format=torch.channels_last)
    return x


def ref_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def leaf(t, dtype=None):
    return t.detach().to(dtype or t.dtype).requires_grad_(True)


def assert_close(actual, expected, dtype):
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(actual.to(expected.dtype), expected, rtol=rtol, atol=atol)


def first_and_second_order(fn, x, b, dy, v, w):
    """y, (dx, db) and the second-order grads of <dx, v> + <db, w> w.r.t. (x, b, dy)."""
    y = fn(x, b)
    dx, db = torch.autograd.grad(y, (x, b), dy, create_graph=True)
    # 0 * x.sum() keeps x in the graph for acts whose second derivative is zero.
    second = torch.autograd.grad((dx * v).sum() + (db * w).sum() + 0 * x.sum(), (x, b, dy), allow_unused=True)
    second = [torch.zeros_like(t) if s is None else s for s, t in zip(second, (x, b, dy))]
    return y, dx, db, second


@pytest.mark.parametrize("clamp", [None, 0.8])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_matches_reference_to_second_order(act, layout, dtype, clamp):
    x0 = make_x(layout, dtype, seed=1)
    gen = torch.Generator().manual_seed(2)
    c = x0.shape[1]
    b0 = torch.randn(c, generator=gen).to(DEVICE, dtype)
    dy0 = torch.randn(x0.shape, generator=gen).to(DEVICE, dtype)
    v0 = torch.randn(x0.shape, generator=gen).to(DEVICE, dtype)
    w0 = torch.randn(c, generator=gen).to(DEVICE, dtype)
    kw = dict(act=act, alpha=0.2, gain=1.3, clamp=clamp)

    out = first_and_second_order(lambda x, b: bias_act(x, b, impl="triton", **kw),
                                 leaf(x0), leaf(b0), leaf(dy0), v0, w0)
    # The reference runs in fp32 on the same values: the kernel computes in fp32 inside, so this is the
    # answer it should round to (a bf16 reference would round every intermediate).
    rd = ref_dtype(dtype)
    expected = first_and_second_order(lambda x, b: bias_act_ref(x, b, **kw), leaf(x0, rd), leaf(b0, rd),
                                      leaf(dy0, rd), v0.to(rd), w0.to(rd))
    y, dx, db, second = out
    assert y.dtype == dtype and dx.dtype == dtype and db.dtype == dtype
    assert y.stride() == x0.stride() and dx.stride() == x0.stride()  # layout kept
    assert_close(y, expected[0], dtype)
    assert_close(dx, expected[1], dtype)
    assert_close(db, expected[2], dtype)
    for got, want in zip(second, expected[3]):
        assert_close(got, want, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_gradcheck_and_gradgradcheck_fp64(act, layout):
    shape = (3, 4) if layout == "2d" else (2, 3, 2, 2)
    x = leaf(make_x(layout, torch.float64, shape=shape, seed=3))
    b = leaf(torch.randn(shape[1], dtype=torch.float64, device=DEVICE))
    # clamp=1.5 stays active for some outputs of the unbounded acts; gain exercises the scaling.
    fn = lambda x, b: bias_act(x, b, act=act, gain=1.5, clamp=1.5, impl="triton")  # noqa: E731
    # fast_mode checks random projections of the Jacobians: the same test at a fraction of the kernel calls.
    assert torch.autograd.gradcheck(fn, (x, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, b), fast_mode=True)


def test_without_bias_and_bias_without_grad():
    x0 = make_x("nchw", torch.float32)
    x = leaf(x0)
    y = bias_act(x, act="tanh", impl="triton")
    torch.testing.assert_close(y, torch.tanh(x0), rtol=1e-5, atol=1e-6)
    (dx,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(dx, 1 - torch.tanh(x0) ** 2, rtol=1e-5, atol=1e-6)
    b = torch.randn(x0.shape[1], device=DEVICE)  # no requires_grad: only dx is produced
    x = leaf(x0)
    (dx,) = torch.autograd.grad(bias_act(x, b, act="relu", impl="triton").sum(), x)
    torch.testing.assert_close(dx, (bias_act_ref(x0, b) > 0).float())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_many_tiles_and_bias_partials(layout, monkeypatch):
    """A tiny tile forces many programs, the row loop and multi-row partial sums on small tensors."""
    monkeypatch.setattr(ba_module, "TILE", 16)
    shape = (37, 6) if layout == "2d" else (3, 5, 3, 7)
    x0 = make_x(layout, torch.float32, shape=shape, seed=4)
    b0 = torch.randn(shape[1], device=DEVICE)
    x, b = leaf(x0), leaf(b0)
    y = bias_act(x, b, act="lrelu", impl="triton")
    dx, db = torch.autograd.grad(y, (x, b), torch.ones_like(y))
    xr, br = leaf(x0), leaf(b0)
    yr = bias_act_ref(xr, br, act="lrelu")
    dxr, dbr = torch.autograd.grad(yr, (xr, br), torch.ones_like(yr))
    torch.testing.assert_close(y, yr)
    torch.testing.assert_close(dx, dxr)
    torch.testing.assert_close(db, dbr, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_exact_tiling_without_masks(layout, monkeypatch):
    """Shapes the tiles cover exactly take the unmasked path."""
    monkeypatch.setattr(ba_module, "TILE", 16)
    shape = (8, 8) if layout == "2d" else ((4, 2, 4, 4) if layout == "nchw" else (2, 4, 2, 2))
    x0 = make_x(layout, torch.float32, shape=shape, seed=9)
    R, K, _, _ = ba_module._layout(x0)
    block_r, block_k = ba_module._tiles(R, K)
    assert R % block_r == 0 and K % block_k == 0
    b0 = torch.randn(shape[1], device=DEVICE)
    x, b = leaf(x0), leaf(b0)
    y = bias_act(x, b, act="sigmoid", clamp=0.6, impl="triton")
    dx, db = torch.autograd.grad(y, (x, b), torch.ones_like(y))
    xr, br = leaf(x0), leaf(b0)
    yr = bias_act_ref(xr, br, act="sigmoid", clamp=0.6)
    dxr, dbr = torch.autograd.grad(yr, (xr, br), torch.ones_like(yr))
    torch.testing.assert_close(y, yr)
    torch.testing.assert_close(dx, dxr)
    torch.testing.assert_close(db, dbr)


def test_bias_gradient_is_deterministic():
    x0 = make_x("nhwc", torch.float32, shape=(4, 6, 5, 5), seed=5)
    b = leaf(torch.randn(6, device=DEVICE))
    grads = []
    for _ in range(2):
        x = leaf(x0)
        y = bias_act(x, b, act="sigmoid", impl="triton")
        grads.append(torch.autograd.grad(y, b, torch.ones_like(y))[0])
    assert torch.equal(grads[0], grads[1])


def test_other_strides_are_copied_to_contiguous():
    base = torch.randn(7, 5, device=DEVICE)
    x = base.t()  # (5, 7), neither contiguous nor channels_last
    b = torch.randn(7, device=DEVICE)
    torch.testing.assert_close(bias_act(x, b, act="lrelu", impl="triton"), bias_act_ref(x, b, act="lrelu"))


def test_empty_batch():
    x = leaf(torch.randn(0, 3, 2, 2, device=DEVICE))
    b = leaf(torch.randn(3, device=DEVICE))
    y = bias_act(x, b, act="relu", impl="triton")
    assert y.shape == x.shape
    dx, db = torch.autograd.grad(y.sum(), (x, b))
    assert dx.shape == x.shape and torch.equal(db, torch.zeros_like(db))


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 9), h=st.integers(1, 6), w=st.integers(1, 6),
       layout=st.sampled_from(("2d", "nchw", "nhwc")), act=st.sampled_from(ACTIVATIONS),
       clamp=st.sampled_from((None, 0.5)), seed=st.integers(0, 2**16))
def test_odd_shapes_property(n, c, h, w, layout, act, clamp, seed):
    shape = (n * h, c) if layout == "2d" else (n, c, h, w)
    x0 = make_x(layout, torch.float32, shape=shape, seed=seed)
    b0 = torch.randn(c, generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    kw = dict(act=act, gain=0.7, clamp=clamp)
    x, b = leaf(x0), leaf(b0)
    y = bias_act(x, b, impl="triton", **kw)
    dx, db = torch.autograd.grad(y, (x, b), torch.ones_like(y))
    xr, br = leaf(x0), leaf(b0)
    yr = bias_act_ref(xr, br, **kw)
    dxr, dbr = torch.autograd.grad(yr, (xr, br), torch.ones_like(yr))
    torch.testing.assert_close(y, yr, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dx, dxr, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(db, dbr, rtol=1e-5, atol=1e-5)


def test_layers_carry_their_kernel_choice(monkeypatch):
    """A model built with impl="ref" never launches a kernel, while one built with "triton" beside it does: the
    choice lives on the layers, not in process-wide state."""
    from ganforge.models import build_models

    def boom(*args, **kwargs):
        raise AssertionError("the Triton path ran")

    monkeypatch.setattr(ba_module, "bias_act_triton", boom)
    _, D_ref = build_models("mlp", (1, 4, 4), impl="ref")
    _, D_triton = build_models("mlp", (1, 4, 4), impl="triton")
    x = torch.randn(3, 1, 4, 4)
    assert D_ref(x).shape == (3,)
    with pytest.raises(AssertionError, match="Triton path ran"):
        D_triton(x)
    assert kernels.resolve_impl("auto", x) == "triton"  # the interpreter is on in the tests; nothing else changed it


@pytest.mark.parametrize("impl", ["ref", "triton"])
def test_bad_arguments_raise_value_error(impl):
    x = torch.randn(2, 3, 4, 4, device=DEVICE)
    with pytest.raises(ValueError, match="bias must have shape"):
        bias_act(x, torch.zeros(4, device=DEVICE), impl=impl)
    with pytest.raises(ValueError, match="unknown act"):
        bias_act(x, act="gelu", impl=impl)
    with pytest.raises(ValueError, match="clamp"):
        bias_act(x, clamp=-1.0, impl=impl)
    with pytest.raises(ValueError, match="floating-point"):
        bias_act(torch.ones(2, 3, dtype=torch.int32, device=DEVICE), impl=impl)
    with pytest.raises(ValueError, match="shape"):
        bias_act(torch.randn(2, 3, 4, device=DEVICE), impl=impl)
    with pytest.raises(ValueError, match="impl"):
        bias_act(x, impl="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_large_bf16_on_cuda(layout):
    x0 = make_x(layout, torch.bfloat16, shape=(32, 96, 33, 31), seed=6)
    b0 = torch.randn(96, device=DEVICE, dtype=torch.bfloat16)
    x, b = leaf(x0), leaf(b0)
    y = bias_act(x, b, act="lrelu", gain=2**0.5, impl="triton")
    dy = torch.randn_like(y)
    dx, db = torch.autograd.grad(y, (x, b), dy)
    xr, br = leaf(x0, torch.float32), leaf(b0, torch.float32)
    yr = bias_act_ref(xr, br, act="lrelu", gain=2**0.5)
    dxr, dbr = torch.autograd.grad(yr, (xr, br), dy.float())
    torch.testing.assert_close(y.float(), yr, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(dx.float(), dxr, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(db.float(), dbr, rtol=2e-2, atol=1.0)  # sums of ~100k bf16 terms


@pytest.mark.gpu
def test_cuda_graph_capture_replays_forward_and_backward():
    x = torch.randn(8, 16, 12, 12, device="cuda", requires_grad=True)
    b = torch.randn(16, device="cuda", requires_grad=True)
    dy = torch.randn(8, 16, 12, 12, device="cuda")

    def step():
        y = bias_act(x, b, act="lrelu", clamp=1.0, impl="triton")
        return (y,) + torch.autograd.grad(y, (x, b), dy)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # compile the kernels before capture
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = step()
    with torch.no_grad():
        x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    xr, br = leaf(x), leaf(b)
    yr = bias_act_ref(xr, br, act="lrelu", clamp=1.0)
    expected = (yr,) + torch.autograd.grad(yr, (xr, br), dy)
    for got, want in zip(outs, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
