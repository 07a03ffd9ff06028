"""Fused bias + activation + gain + clamp: y = clamp(act(x + b) * gain, -clamp, +clamp).

One pass over x in each direction:

- forward: one kernel reads x, adds the bias, applies the activation, gain and clamp, writes y;
- backward: one kernel reads dy and x, writes dx and, when the bias needs a gradient, per-tile partial sums of
  dx per channel; a small deterministic torch sum over those partials gives db (no float atomics);
- second order (gradient penalties differentiate through D's backward): the backward is itself an
  autograd.Function. Its own backward is the same kernel again for d/d(dy) (the map dy -> dx is linear) plus
  plain torch ops for the act'' term (non-zero only for tanh and sigmoid), so every order is differentiable.

Memory layout: the kernels see x as a row-major matrix [R, K] in memory order, so all accesses are contiguous
and vectorised; the channel of an element is either its row (NCHW: rows are (n, c) planes of H*W) or its
column ((N, C) and channels_last NHWC: columns are channels). The bias is then loaded once per row or column
instead of once per element, and no per-element integer division is needed.
"""
import torch

from ._activations import ACTIVATION_TABLE, ACTIVATIONS, clamp_mask
from ._dispatch import resolve_impl
from ._layout import dense, programs_target

try:
    import triton
    import triton.language as tl
except ImportError:  # the package still imports; "auto" then resolves to the reference
    triton = None

# Elements per program: large tiles keep enough bytes in flight per SM to saturate HBM.
TILE = 4096
NUM_WARPS = 4  # measured best on an H200 for both layouts (NHWC backward: 81% vs 75% of copy with 8)
EVICT = ""  # cache eviction hint for the streamed loads of x and dy ("" = default; evict_first measured slower)
# Bias partials: a program sums at least this many rows, so the fp32 partial buffer stays a small fraction
# of the tensor (it is written and read once more).
MIN_ROWS_PER_PARTIAL = 64


def _check_args(x, b, act, clamp):
    if act not in ACTIVATIONS:
        raise ValueError(f"bias_act: unknown act {act!r}; expected one of {ACTIVATIONS}")
    if not x.is_floating_point():
        raise ValueError(f"bias_act: x must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() not in (2, 4):
        raise ValueError(f"bias_act: x must be (N, C) or (N, C, H, W), got shape {tuple(x.shape)}")
    if b is not None:
        if b.dim() != 1 or b.shape[0] != x.shape[1]:
            raise ValueError(f"bias_act: bias must have shape ({x.shape[1]},) to match x's C, got {tuple(b.shape)}")
        if not b.is_floating_point():
            raise ValueError(f"bias_act: bias must be floating point, got dtype {b.dtype}")
    if clamp is not None and clamp < 0:
        raise ValueError(f"bias_act: clamp must be >= 0 or None, got {clamp}")


def bias_act_ref(x, b=None, act="linear", alpha=0.2, gain=1.0, clamp=None):
    """Reference in plain PyTorch ops (differentiable to any order); arguments as in :func:`bias_act`."""
    if b is not None:
        x = x + b.to(x.dtype).reshape([1, -1] + [1] * (x.dim() - 2))
    x = ACTIVATION_TABLE[act].fn(x, alpha)
    if gain != 1.0:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


# ----------------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------------

if triton is not None:
    # The kernels' activation codes, from the table (module-level constexprs are visible inside @triton.jit).
    _LINEAR = tl.constexpr(ACTIVATION_TABLE["linear"].code)
    _RELU = tl.constexpr(ACTIVATION_TABLE["relu"].code)
    _LRELU = tl.constexpr(ACTIVATION_TABLE["lrelu"].code)
    _TANH = tl.constexpr(ACTIVATION_TABLE["tanh"].code)
    _SIGMOID = tl.constexpr(ACTIVATION_TABLE["sigmoid"].code)

    @triton.jit
    def _sigmoid(z):
        return 1.0 / (1.0 + tl.exp(-z))

    @triton.jit
    def _act_and_slope(z, alpha, ACT: tl.constexpr):
        """Return (act(z), act'(z)) for the activation code ACT (kernels._activations.ACTIVATION_TABLE)."""
        # Slopes are built with z's dtype: a bare Python constant would be an fp32 scalar, inexact in fp64.
        one = tl.full(z.shape, 1.0, z.dtype)
        if ACT == _LINEAR:
            a = z
            d = one
        elif ACT == _RELU:
            a = tl.where(z > 0, z, 0.0)
            d = tl.where(z > 0, one, 0.0)
        elif ACT == _LRELU:
            a = tl.where(z > 0, z, z * alpha)
            d = tl.where(z > 0, one, one * alpha)
        elif ACT == _TANH:  # through sigmoid: libdevice tanh is unavailable in the interpreter
            a = 2.0 * _sigmoid(2.0 * z) - 1.0
            d = 1.0 - a * a
        else:
            tl.static_assert(ACT == _SIGMOID)
            a = _sigmoid(z)
            d = a * (1.0 - a)
        return a, d

    @triton.jit
    def _load(ptr, mask, EVEN: tl.constexpr, EVICT: tl.constexpr):
        # EVEN: the grid tiles the tensor exactly, so no lane is out of bounds and the mask can go
        # (unmasked accesses vectorise best).
        if EVEN:
            return tl.load(ptr, eviction_policy=EVICT)
        return tl.load(ptr, mask=mask, other=0.0, eviction_policy=EVICT)

    @triton.jit
    def _store(ptr, value, mask, EVEN: tl.constexpr):
        if EVEN:
            tl.store(ptr, value)
        else:
            tl.store(ptr, value, mask=mask)

    @triton.jit
    def _tile_offsets(pid_r, pid_k, R, K, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, INT64: tl.constexpr):
        rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
        rmask = rows < R
        cmask = cols < K
        if INT64:  # only tensors past 2**31 elements pay for 64-bit index arithmetic
            offs = rows.to(tl.int64)[:, None] * K + cols[None, :]
        else:
            offs = rows[:, None] * K + cols[None, :]
        return rows, cols, rmask, cmask, offs, rmask[:, None] & cmask[None, :]

    @triton.jit
    def _load_pre_activation(x_ptr, b_ptr, offs, mask, rows, cols, rmask, cmask, C,
                             HAS_BIAS: tl.constexpr, CH_ON_ROWS: tl.constexpr, IS_F64: tl.constexpr,
                             EVEN: tl.constexpr, EVICT: tl.constexpr):
        """z = x + b in the compute dtype (fp32, or fp64 for fp64 inputs)."""
        cdt = tl.float64 if IS_F64 else tl.float32
        z = _load(x_ptr + offs, mask, EVEN, EVICT).to(cdt)
        if HAS_BIAS:
            if CH_ON_ROWS:
                b = tl.load(b_ptr + rows % C, mask=rmask, other=0.0).to(cdt)
                z = z + b[:, None]
            else:
                b = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(cdt)
                z = z + b[None, :]
        return z

    @triton.jit
    def _bias_act_fwd_kernel(x_ptr, b_ptr, y_ptr, R, K, C, alpha, gain, clamp, ACT: tl.constexpr,
                             HAS_BIAS: tl.constexpr, HAS_CLAMP: tl.constexpr,
                             CH_ON_ROWS: tl.constexpr, IS_F64: tl.constexpr, INT64: tl.constexpr,
                             EVEN: tl.constexpr, EVICT: tl.constexpr, BLOCK_R: tl.constexpr,
                             BLOCK_K: tl.constexpr):
        rows, cols, rmask, cmask, offs, mask = _tile_offsets(tl.program_id(0), tl.program_id(1), R, K,
                                                             BLOCK_R, BLOCK_K, INT64)
        z = _load_pre_activation(x_ptr, b_ptr, offs, mask, rows, cols, rmask, cmask, C,
                                 HAS_BIAS, CH_ON_ROWS, IS_F64, EVEN, EVICT)
        a, _ = _act_and_slope(z, alpha, ACT)
        y = a * gain
        if HAS_CLAMP:
            lim = tl.zeros_like(y) + clamp  # in y's dtype
            y = tl.minimum(tl.maximum(y, -lim), lim)
        _store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask, EVEN)

    @triton.jit
    def _grad_tile(dy_ptr, x_ptr, b_ptr, pid_r, pid_k, R, K, C, alpha, gain, clamp, ACT: tl.constexpr,
                   HAS_BIAS: tl.constexpr, HAS_CLAMP: tl.constexpr,
                   CH_ON_ROWS: tl.constexpr, IS_F64: tl.constexpr, INT64: tl.constexpr, EVEN: tl.constexpr,
                   EVICT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
        """dx for one tile: dy * gain * act'(x + b), zero where the clamp was active."""
        rows, cols, rmask, cmask, offs, mask = _tile_offsets(pid_r, pid_k, R, K, BLOCK_R, BLOCK_K, INT64)
        cdt = tl.float64 if IS_F64 else tl.float32
        z = _load_pre_activation(x_ptr, b_ptr, offs, mask, rows, cols, rmask, cmask, C,
                                 HAS_BIAS, CH_ON_ROWS, IS_F64, EVEN, EVICT)
        # other=0 makes masked lanes contribute exactly zero to the bias partial sums.
        dy = _load(dy_ptr + offs, mask, EVEN, EVICT).to(cdt)
        a, d = _act_and_slope(z, alpha, ACT)
        g = dy * d * gain
        if HAS_CLAMP:
            # torch.clamp passes the gradient where -clamp <= value <= clamp.
            g = tl.where(tl.abs(a * gain) <= clamp, g, 0.0)
        return g, offs, mask, rows, cols, rmask, cmask

    @triton.jit
    def _bias_act_bwd_kernel(dy_ptr, x_ptr, b_ptr, dx_ptr, part_ptr, R, K, C, alpha, gain, clamp,
                             ROW_ITERS: tl.constexpr,
                             ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_CLAMP: tl.constexpr,
                             CH_ON_ROWS: tl.constexpr, IS_F64: tl.constexpr, INT64: tl.constexpr,
                             EVEN: tl.constexpr, EVICT: tl.constexpr, NEED_DB: tl.constexpr,
                             BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
        pid_r = tl.program_id(0)
        pid_k = tl.program_id(1)
        if CH_ON_ROWS or not NEED_DB:
            # One tile per program; with NCHW each row is one channel plane, so its sum is the partial.
            g, offs, mask, rows, cols, rmask, cmask = _grad_tile(
                dy_ptr, x_ptr, b_ptr, pid_r, pid_k, R, K, C, alpha, gain, clamp,
                ACT, HAS_BIAS, HAS_CLAMP, CH_ON_ROWS, IS_F64, INT64, EVEN, EVICT, BLOCK_R, BLOCK_K)
            _store(dx_ptr + offs, g.to(dx_ptr.dtype.element_ty), mask, EVEN)
            if NEED_DB:
                # part is [cdiv(K, BLOCK_K), R]: one sum per (row, column block).
                tl.store(part_ptr + pid_k * R + rows, tl.sum(g, axis=1), mask=rmask)
        else:
            # Channels are columns: walk ROW_ITERS row tiles, keep per-column sums, write one partial row.
            # The loop keeps the partial buffer small ([grid rows, K]) whatever R is. ROW_ITERS is a constexpr
            # (a power of two, so few variants compile) because the interpreter cannot loop to a runtime bound.
            acc = tl.zeros([BLOCK_K], dtype=tl.float64 if IS_F64 else tl.float32)
            for i in range(ROW_ITERS):
                g, offs, mask, rows, cols, rmask, cmask = _grad_tile(
                    dy_ptr, x_ptr, b_ptr, pid_r * ROW_ITERS + i, pid_k, R, K, C, alpha, gain, clamp,
                    ACT, HAS_BIAS, HAS_CLAMP, CH_ON_ROWS, IS_F64, INT64, EVEN, EVICT, BLOCK_R, BLOCK_K)
                _store(dx_ptr + offs, g.to(dx_ptr.dtype.element_ty), mask, EVEN)
                acc += tl.sum(g, axis=0)
            cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
            tl.store(part_ptr + pid_r * K + cols, acc, mask=cols < K)


# ----------------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------------

def _layout(x):
    """Describe x as a row-major [R, K] matrix in memory order: (R, K, channel_on_rows, memory_format)."""
    if x.dim() == 2:
        return x.shape[0], x.shape[1], False, torch.contiguous_format
    n, c, h, w = x.shape
    if x.is_contiguous():
        if h * w == 1:  # (N, C, 1, 1): rows of one element would waste the tile; channels are columns
            return n, c, False, torch.contiguous_format
        return n * c, h * w, True, torch.contiguous_format
    return n * h * w, c, False, torch.channels_last


def _tiles(R, K):
    block_k = min(triton.next_power_of_2(K), TILE)
    block_r = min(max(TILE // block_k, 1), triton.next_power_of_2(R))
    return block_r, block_k


def _consts(x, b, act, clamp):
    """The compile-time switches: which activation, which branches, which dtype. The scalars alpha, gain and
    clamp are runtime arguments (fp32: an fp64 input sees them rounded to fp32, 1e-8 relative), so a new value
    reuses the compiled kernel instead of compiling another."""
    return dict(ACT=ACTIVATION_TABLE[act].code, HAS_BIAS=b is not None, HAS_CLAMP=clamp is not None,
                IS_F64=x.dtype == torch.float64, INT64=x.numel() >= 2**31, EVICT=EVICT)


def _scalars(alpha, gain, clamp):
    return float(alpha), float(gain), float(clamp if clamp is not None else 0.0)


def _launch_fwd(x, b, act, alpha, gain, clamp):
    y = torch.empty_like(x)  # keeps x's strides (contiguous or channels_last)
    if x.numel() == 0:
        return y
    R, K, ch_on_rows, _ = _layout(x)
    block_r, block_k = _tiles(R, K)
    grid = (triton.cdiv(R, block_r), triton.cdiv(K, block_k))
    _bias_act_fwd_kernel[grid](
        x, b if b is not None else x, y, R, K, x.shape[1], *_scalars(alpha, gain, clamp), CH_ON_ROWS=ch_on_rows,
        EVEN=R % block_r == 0 and K % block_k == 0, BLOCK_R=block_r,
        BLOCK_K=block_k, num_warps=NUM_WARPS, **_consts(x, b, act, clamp))
    return y


def _launch_bwd(dy, x, b, need_db, act, alpha, gain, clamp):
    """Return (dx, db); db is None unless need_db. dy is brought to x's memory layout first."""
    R, K, ch_on_rows, fmt = _layout(x)
    dy = dy.to(x.dtype).contiguous(memory_format=fmt)
    dx = torch.empty_like(x)
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if x.numel() == 0:
        return dx, (torch.zeros_like(b) if need_db else None)
    block_r, block_k = _tiles(R, K)
    grid_r, grid_k = triton.cdiv(R, block_r), triton.cdiv(K, block_k)
    row_iters = 1
    if need_db and not ch_on_rows:
        # Each program sums row_iters row tiles into one partial row: enough rows that the partial buffer
        # stays small, but never so many that the grid stops filling the device. Powers of two keep the
        # number of compiled variants small.
        row_iters = triton.next_power_of_2(triton.cdiv(MIN_ROWS_PER_PARTIAL, block_r))
        fill = max(1, (grid_r * grid_k) // programs_target(x.device, off_device=2))
        while row_iters > 1 and row_iters > fill:
            row_iters //= 2
        grid_r = triton.cdiv(grid_r, row_iters)
    even = K % block_k == 0 and R % (block_r * row_iters) == 0
    if need_db:
        part = torch.empty((grid_k, R) if ch_on_rows else (grid_r, K), device=x.device, dtype=acc_dtype)
    else:
        part = dx  # never touched: NEED_DB=False compiles the store away
    _bias_act_bwd_kernel[(grid_r, grid_k)](
        dy, x, b if b is not None else x, dx, part, R, K, x.shape[1], *_scalars(alpha, gain, clamp),
        ROW_ITERS=row_iters, CH_ON_ROWS=ch_on_rows, EVEN=even, NEED_DB=need_db, BLOCK_R=block_r, BLOCK_K=block_k,
        num_warps=NUM_WARPS, **_consts(x, b, act, clamp))
    if not need_db:
        return dx, None
    # Second stage of the bias reduction: a fixed-order torch sum, deterministic run to run.
    if ch_on_rows:
        db = part.view(grid_k, R // x.shape[1], x.shape[1]).sum(dim=(0, 1))
    else:
        db = part.sum(dim=0)
    return dx, db.to(b.dtype)


# ----------------------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------------------

def _channel_view(v, like):
    """Reshape a per-channel vector to broadcast along dim 1 of ``like``."""
    return v.reshape([1, -1] + [1] * (like.dim() - 2))


class _BiasActGrad(torch.autograd.Function):
    """(dy, x, b) -> (dx, db): the backward of bias_act, itself differentiable."""

    @staticmethod
    def forward(ctx, dy, x, b, need_db, act, alpha, gain, clamp):
        ctx.save_for_backward(dy, x, b)
        ctx.params = (act, alpha, gain, clamp)
        return _launch_bwd(dy, x, b, need_db, act, alpha, gain, clamp)

    @staticmethod
    def backward(ctx, g_dx, g_db):
        dy, x, b = ctx.saved_tensors
        act, alpha, gain, clamp = ctx.params
        # db is a per-channel sum of dx, so its cotangent broadcasts into dx's.
        if g_db is not None:
            g_db = _channel_view(g_db, x).to(x.dtype)
            g_dx = g_db.expand_as(x) if g_dx is None else g_dx + g_db
        if g_dx is None:
            return (None,) * 8
        d_dy = d_x = d_b = None
        if ctx.needs_input_grad[0]:
            # dx is linear in dy with the same slope, so d/d(dy) is this very op applied to the cotangent.
            d_dy, _ = _BiasActGrad.apply(g_dx, x, b, False, act, alpha, gain, clamp)
        wants_z = ctx.needs_input_grad[1] or (b is not None and ctx.needs_input_grad[2])
        spec = ACTIVATION_TABLE[act]
        if not spec.piecewise_linear and wants_z:
            # d/dz of dy * gain * act'(z) = dy * gain * act''(z); zero for the piecewise-linear acts.
            cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
            z = x.to(cdt) if b is None else x.to(cdt) + _channel_view(b.to(x.dtype).to(cdt), x)
            h = g_dx.to(cdt) * dy.to(cdt) * (gain * spec.second(z, alpha))
            if clamp is not None:
                h = h * clamp_mask(spec.fn(z, alpha), gain, clamp)
            d_x = h.to(x.dtype)
            if b is not None and ctx.needs_input_grad[2]:
                dims = [0] + list(range(2, x.dim()))
                d_b = h.sum(dim=dims).to(b.dtype)
            if not ctx.needs_input_grad[1]:
                d_x = None
        return d_dy, d_x, d_b, None, None, None, None, None


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, act, alpha, gain, clamp):
        ctx.save_for_backward(x, b)
        ctx.params = (act, alpha, gain, clamp)
        return _launch_fwd(x, b, act, alpha, gain, clamp)

    @staticmethod
    def backward(ctx, dy):
        x, b = ctx.saved_tensors
        need_db = b is not None and ctx.needs_input_grad[1]
        dx, db = _BiasActGrad.apply(dy, x, b, need_db, *ctx.params)
        return dx, db, None, None, None, None


def bias_act_triton(x, b=None, act="linear", alpha=0.2, gain=1.0, clamp=None):
    """The Triton path. x in another memory order than contiguous / channels_last is copied first."""
    if triton is None:
        raise RuntimeError("bias_act: impl='triton' needs the triton package")
    x = dense(x)
    if b is not None:
        # Same rounding as the reference (bias cast to x's dtype); the cast is differentiable.
        b = b.to(x.dtype).contiguous()
    return _BiasAct.apply(x, b, act, alpha, gain, clamp)


def bias_act(x, b=None, *, act="linear", alpha=0.2, gain=1.0, clamp=None, impl="auto"):
    """Compute clamp(act(x + b) * gain, -clamp, +clamp), b broadcast along dim 1, in one pass.

    Args:
        x: (N, C) or (N, C, H, W) floating tensor (fp16, bf16, fp32 or fp64), contiguous or channels_last; other
            memory orders are copied first.
        b: optional bias of shape (C,); cast to x's dtype before the add, as the reference does.
        act: one of ``ACTIVATIONS`` ("linear", "relu", "lrelu", "tanh", "sigmoid").
        alpha: negative slope of "lrelu" (ignored by the others).
        gain: factor applied after the activation.
        clamp: if not None (>= 0), the output is clamped to [-clamp, clamp]; its gradient is zero outside.
        impl: "auto" (Triton on CUDA tensors or under the interpreter, else the reference), "triton" or "ref".

    Returns:
        A tensor of x's shape, dtype and memory layout, differentiable to second order in x and b.

    Raises:
        ValueError: on an unknown act or impl, a non-floating x, a wrong rank, a bias of the wrong shape, or a
            negative clamp.
    """
    _check_args(x, b, act, clamp)
    if resolve_impl(impl, x) == "ref":
        return bias_act_ref(x, b, act, alpha, gain, clamp)
    return bias_act_triton(x, b, act, alpha, gain, clamp)
