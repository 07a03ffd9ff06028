"""Kernel microbenchmarks: each op's forward, backward and both, for three implementations side by side.

    eager     the plain-PyTorch reference (kernels.*_ref)
    compile   torch.compile of that reference
    ganforge  the Triton kernels (impl="triton")

Each row reports the time and the bandwidth reached over the minimal bytes the pass must move (every input
read once, every output written once), also as a percentage of the measured device copy bandwidth. On CUDA a
pass is captured in a CUDA graph and the replays are timed (row["timing"] == "cuda-graph"): device time, as
the engine's graphed steps see it; a pass that cannot be captured is timed by direct calls ("launch").

    ganforge bench kernels [--device cuda] [--quick]   (the rows of bench/suite.py's kernels case)
"""
import contextlib

import torch

from .timing import copy_bandwidth_gbps, time_fn
from ..kernels import bias_act, bias_act_ref, gradient_penalty, gradient_penalty_ref, interpreter_on

PASSES = ("forward", "backward", "both")
IMPLS = ("eager", "compile", "ganforge")
GPU_SIZES = (1 << 20, 1 << 22, 1 << 24, 1 << 26)  # up to 64M elements
CPU_SIZES = (1 << 12, 1 << 16)
QUICK_GPU_SIZES = (1 << 20, 1 << 24)
QUICK_CPU_SIZES = (1 << 12,)
GP_SAMPLE = (3, 64, 64)  # one 64x64 RGB image per sample, the WGAN-GP interpolate's gradient


# ---- the two ops as benchmark cases -----------------------------------------------------------------------

def _bias_act_case(numel, device, dtype):
    """(N, C, H, W) with C = 64 and up to 64x64 planes; lrelu with a bias, as in a DCGAN critic."""
    c = 64
    hw = min(64 * 64, max(1, numel // c))
    side = int(hw ** 0.5)
    n = max(1, numel // (c * side * side))
    shape = (n, c, side, side)
    x = torch.randn(shape, device=device, dtype=dtype)
    b = torch.randn(c, device=device, dtype=dtype)
    es = x.element_size()
    fwd_bytes = 2 * x.numel() * es + c * es  # read x, b; write y
    bwd_bytes = 3 * x.numel() * es + 2 * c * es  # read dy, x, b; write dx, db
    impls = {
        "eager": lambda x, b: bias_act_ref(x, b, act="lrelu"),
        "ganforge": lambda x, b: bias_act(x, b, act="lrelu", impl="triton"),
    }
    return shape, (x, b), impls, fwd_bytes, bwd_bytes


def _gradient_penalty_case(numel, device, dtype):
    """(N, 3, 64, 64): N samples of D's input gradient; the WGAN-GP penalty."""
    d = GP_SAMPLE[0] * GP_SAMPLE[1] * GP_SAMPLE[2]
    shape = (max(1, numel // d),) + GP_SAMPLE if numel >= 4 * d else (max(1, numel // 1024), 1, 32, 32)
    g = torch.randn(shape, device=device, dtype=dtype) * 0.01
    es = g.element_size()
    fwd_bytes = g.numel() * es + 4  # read g; write the scalar
    bwd_bytes = 2 * g.numel() * es  # read g; write dg
    impls = {
        "eager": lambda g: gradient_penalty_ref(g, "wgan-gp"),
        "ganforge": lambda g: gradient_penalty(g, kind="wgan-gp", impl="triton"),
    }
    return shape, (g,), impls, fwd_bytes, bwd_bytes


CASES = {"bias_act": _bias_act_case, "gradient_penalty": _gradient_penalty_case}


# ---- what runs, and the rules for what is skipped ------------------------------------------------------------

def default_sizes(device, quick):
    """The element counts swept on ``device``, smallest first."""
    on_gpu = torch.device(device).type == "cuda"
    if on_gpu:
        return QUICK_GPU_SIZES if quick else GPU_SIZES
    return QUICK_CPU_SIZES if quick else CPU_SIZES


def bench_dtype(device):
    """bf16 on the GPU (what the engine trains in), fp32 on the CPU."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def skip_reason(impl, device, numel, smallest, quick):
    """Why ``impl`` is not timed at ``numel`` elements on ``device`` (None when it is)."""
    device = torch.device(device)
    if impl == "compile" and device.type == "cpu" and quick:
        return "skipped: torch.compile on CPU is slow (quick mode)"
    if impl == "ganforge" and device.type != "cuda":
        if not interpreter_on():
            return "skipped: Triton needs CUDA or TRITON_INTERPRET=1"
        if numel != smallest:
            return "skipped: Triton interpreter on CPU, timed at the smallest size only"
    return None


def implementation(impls, impl):
    """The callable timed as ``impl``: a case's own function, or torch.compile of its eager reference."""
    return torch.compile(impls["eager"]) if impl == "compile" else impls[impl]


def compile_settings(impl):
    """torch.compile's donated buffers forbid retain_graph=True, which the backward-only timing needs: a
    context that lifts them around compiling and running ``impl`` (no-op for the other impls)."""
    if impl != "compile":
        return contextlib.nullcontext()
    try:
        import torch._functorch.config as functorch_config
        return functorch_config.patch(donated_buffer=False)
    except (ImportError, AttributeError):
        return contextlib.nullcontext()


# ---- timing ---------------------------------------------------------------------------------------------

def _pass_fn(fn, inputs, pass_name):
    """A zero-argument callable running one pass of ``fn`` on ``inputs``."""
    if pass_name == "forward":
        def run():
            with torch.no_grad():
                return fn(*inputs)
        return run
    leaves = [t.detach().requires_grad_(True) for t in inputs]
    if pass_name == "backward":
        out = fn(*leaves)  # built once; the timed call reuses its graph
        dout = torch.randn_like(out)
        return lambda: torch.autograd.grad(out, leaves, dout, retain_graph=True)
    dout = torch.randn_like(fn(*leaves))
    return lambda: torch.autograd.grad(fn(*leaves), leaves, dout)


def _graph_replay(make_run, device):
    """Capture one pass in a CUDA graph and return its replay: device time without Python launch overhead.

    This is how the engine runs its steps (captured once, replayed), and at small sizes a directly launched
    pass is host-bound, so its time says little about the kernels. The pass (and for "backward" the graph
    of the forward) is built on the capture stream, where autograd then runs the backward too."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        run = make_run()
        for _ in range(3):  # compile and autotune before capture
            run()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        run()
    return graph.replay


def runnable_pass(fn, inputs, pass_name, device):
    """(zero-argument callable, how it runs): one pass of ``fn`` captured in a CUDA graph and replayed on a
    GPU where capture works ("cuda-graph"), plain calls otherwise ("launch")."""
    device = torch.device(device)
    make_run = lambda: _pass_fn(fn, inputs, pass_name)  # noqa: E731
    if device.type == "cuda":
        try:
            return _graph_replay(make_run, device), "cuda-graph"
        except Exception:  # capture unsupported for this pass: time the plain calls
            torch.cuda.synchronize(device)
    return make_run(), "launch"


def _time_pass(fn, inputs, pass_name, device):
    """(Quantiles of milliseconds, how it was timed)."""
    run, how = runnable_pass(fn, inputs, pass_name, device)
    if device.type == "cuda":
        return time_fn(run, device), how
    return time_fn(run, device, reps=20, budget_s=1.0), how


def pass_bytes(pass_name, fwd_bytes, bwd_bytes):
    """The minimal bytes one pass moves."""
    return {"forward": fwd_bytes, "backward": bwd_bytes, "both": fwd_bytes + bwd_bytes}[pass_name]


def kernel_rows(device, sizes=None, quick=False, copy_gbps=None):
    """Time every (op, size, pass, impl); return one dict per row (see the module docstring)."""
    device = torch.device(device)
    sizes = sorted(sizes if sizes is not None else default_sizes(device, quick))
    dtype = bench_dtype(device)
    if copy_gbps is None:
        copy_gbps = copy_bandwidth_gbps(device)
    rows = []
    for op, make_case in CASES.items():
        for numel in sizes:
            shape, inputs, impls, fwd_bytes, bwd_bytes = make_case(numel, device, dtype)
            for impl in IMPLS:
                reason = skip_reason(impl, device, numel, sizes[0], quick)
                fn = implementation(impls, impl) if reason is None else None
                for pass_name in PASSES:
                    nbytes = pass_bytes(pass_name, fwd_bytes, bwd_bytes)
                    row = {"op": op, "pass": pass_name, "impl": impl, "numel": inputs[0].numel(),
                           "dtype": str(dtype).replace("torch.", ""), "shape": list(shape), "bytes": nbytes,
                           "median_ms": None, "p20_ms": None, "p80_ms": None, "spread": None, "gbps": None,
                           "pct_of_copy": None, "timing": None, "error": reason}
                    if reason is None:
                        try:
                            with compile_settings(impl):
                                ms, how = _time_pass(fn, inputs, pass_name, device)
                        except Exception as exc:  # e.g. torch.compile failing on this platform
                            row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                        else:
                            gbps = nbytes / (ms.median * 1e-3) / 1e9
                            row.update(median_ms=ms.median, p20_ms=ms.p20, p80_ms=ms.p80, spread=ms.spread,
                                       gbps=gbps, pct_of_copy=100.0 * gbps / copy_gbps, timing=how)
                    rows.append(row)
                del fn
            del inputs
    return rows


def format_table(rows, copy_gbps=None):
    head = f"{'op':<17}{'pass':<9}{'impl':<9}{'numel':>11}  {'shape':<20}{'ms':>9}{'spread':>8}{'GB/s':>9}{'%copy':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = "x".join(str(s) for s in r["shape"])
        if r["median_ms"] is None:
            lines.append(f"{r['op']:<17}{r['pass']:<9}{r['impl']:<9}{r['numel']:>11}  {shape:<20}  {r['error']}")
            continue
        lines.append(f"{r['op']:<17}{r['pass']:<9}{r['impl']:<9}{r['numel']:>11}  {shape:<20}"
                     f"{r['median_ms']:>9.4f}{r['spread']:>8.2f}{r['gbps']:>9.1f}{r['pct_of_copy']:>7.1f}")
    if copy_gbps is not None:
        lines.append(f"copy bandwidth: {copy_gbps:.1f} GB/s")
    return "\n".join(lines)
