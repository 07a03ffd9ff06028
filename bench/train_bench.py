"""End-to-end training throughput: images/s, ms per D and G step, peak memory and MFU per execution mode.

Each configuration (model x objective x batch size) runs in any of these columns:

    eager-fp32        plain PyTorch ops (kernels=ref), fp32, no graphs, autograd double backward for a penalty:
                      the baseline, what users write
    eager-bf16        the same under bf16 autocast
    compile           G and D wrapped in torch.compile (a gradient-penalty D step raises: the error is kept)
    compile-graphs    torch.compile(mode="reduce-overhead") of G and D (compiled and CUDA-graphed), autograd
                      penalty: what a strong user gets without ganforge (the error is kept where compile fails)
    ganforge          bf16, CUDA-graph-captured steps, the Triton kernels, the explicit penalty gradient (CUDA only)
    graphs-ref        ganforge with the reference kernels: the difference is the Triton kernels' own share
    eager-explicit    eager-fp32 with the explicit penalty gradient alone (no graphs, no Triton)
    compile-explicit  `ganforge train --compile`: torch.compile of the whole first-order D and G steps (the
                      penalty through the explicit input gradient), CUDA graphs where the device has them
    steps             what `ganforge train` resolves on this device (precision, graphs, kernels, penalty gradient
                      all "auto"), its steps timed alone
    loop              the same settings through the trainer's own loop (engine.loop.TrainLoop.run, what
                      `ganforge train` runs): progress bar, signal checks, log records, sample grids and
                      checkpoints at the default run's own intervals (LOOP_INTERVALS), in blocks of whole
                      2,000-iteration stretches, so each block carries the user's share of side work

The compiled columns run at the precision `auto` resolves to on the device (as `ganforge train --compile` does: bf16
on CUDA and on CPUs with AMX, fp32 on other CPUs, where bf16 is emulated). Their warm-up runs until a whole penalty
cycle compiles nothing (torch._dynamo's and Inductor's counters), its seconds beyond the steady iterations are the
row's ``compile_s``, and a compilation counted inside a timed block voids the row's figure (the row says so).

The loop row's ``loop_efficiency`` is its images/s over the steps row's, measured in the same run: what the
loop around the steps costs the user. ganforge, graphs-ref, eager-explicit, compile-explicit, steps and loop are
ganforge's own; "vs best other" compares against the best column that is not. Every row records which input
gradient its penalty used (penalty_grad) and the precision, graphs and kernels it resolved to.

The data are synthetic random images of the right shape, so the bench needs no data files. One iteration is
n_critic D steps plus one G step, i.e. ``batch_size`` images; the bench's objectives use n_critic 1 and the
penalty on every D step, except "default", which is `ganforge train`'s own recipe (lazy R1 on every 4th D step).
MFU = model FLOPs per iteration (counted by FlopCounterMode on one eager iteration) / time per iteration
/ the bf16 matrix-product rate measured in the same run.
"""
import gc
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..engine.config import TrainConfig
from ..engine.data import Dataset
from .. import kernels
from ..engine.signals import SignalGuard
from ..engine.loop import TrainLoop
from ..engine.session import build_session, run_iteration

from .timing import StepClock, quantiles, sync, time_blocks

# name -> (model, data shape (C, H, W)): MNIST-shaped digits for 28, CIFAR-shaped for 32, CelebA-shaped for 64.
MODELS = {
    "mlp-28": ("mlp", (1, 28, 28)),
    "dcgan-28": ("dcgan", (1, 28, 28)),
    "dcgan-32": ("dcgan", (3, 32, 32)),
    "dcgan-64": ("dcgan", (3, 64, 64)),
}
# objective -> TrainConfig fields
OBJECTIVES = {
    "none": {"loss": "ns", "penalty": "none"},
    "wgan-gp": {"loss": "wgan", "penalty": "wgan-gp", "penalty_every": 1},
    "r1": {"loss": "ns", "penalty": "r1", "penalty_every": 1},
    "rpgan-r1r2": {"loss": "rpgan", "penalty": "r1+r2", "penalty_every": 1},  # R3GAN's objective
    "default": {},  # `ganforge train`'s recipe: TrainConfig's defaults (ns + R1 on every 4th D step)
}
COLUMNS = {
    "eager-fp32": {"precision": "fp32", "graphs": "off", "kernels": "ref", "compiled": None,
                   "penalty_grad": "autograd"},
    "eager-bf16": {"precision": "bf16", "graphs": "off", "kernels": "ref", "compiled": None,
                   "penalty_grad": "autograd"},
    "compile": {"precision": "auto", "graphs": "off", "kernels": "ref", "compiled": "default",
                "penalty_grad": "autograd"},
    "compile-graphs": {"precision": "auto", "graphs": "off", "kernels": "ref", "compiled": "reduce-overhead",
                       "penalty_grad": "autograd"},
    "ganforge": {"precision": "bf16", "graphs": "on", "kernels": "triton", "compiled": None, "penalty_grad": "auto"},
    "graphs-ref": {"precision": "bf16", "graphs": "on", "kernels": "ref", "compiled": None, "penalty_grad": "auto"},
    "eager-explicit": {"precision": "fp32", "graphs": "off", "kernels": "ref", "compiled": None,
                       "penalty_grad": "explicit"},
    "compile-explicit": {"precision": "auto", "graphs": "auto", "kernels": "ref", "compiled": "steps",
                         "penalty_grad": "explicit"},
    "steps": {"precision": "auto", "graphs": "auto", "kernels": "auto", "compiled": None, "penalty_grad": "auto"},
    "loop": {"precision": "auto", "graphs": "auto", "kernels": "auto", "compiled": None, "penalty_grad": "auto"},
}
OWN_COLUMNS = ("ganforge", "graphs-ref", "eager-explicit", "compile-explicit", "steps", "loop")  # not "other"
BASELINE = "eager-fp32"
# The loop column's side work: the default run's own intervals (TrainConfig: a log record every 100 iterations, a
# sample grid every 1,000, a checkpoint every 2,000). Its blocks are whole LOOP_STRETCH stretches, each holding
# exactly that side work, so its images/s are the user's; a shorter block would hold more side work per iteration.
LOOP_INTERVALS = {"log_every": 100, "sample_every": 1000, "ckpt_every": 2000}
BENCH_WIDTH = 64
LOOP_STRETCH = 2000
LOOP_BUDGET_S = 120  # the most seconds the loop column's blocks may take, estimated first, unless --iters asks for more
SETTLE_CYCLES = 4  # compiled columns: at most this many extra penalty cycles of warm-up for compilation to settle
MAX_CYCLE = 16  # iterations of one such cycle at most (penalty_cost's 'no penalty' column never penalises)
STEP_SAMPLES = 25  # iterations whose D and G steps are timed apart, per column


@dataclass
class Plan:
    """How much to run: the sweep and the timing loop sizes."""
    models: tuple
    objectives: tuple
    batch_sizes: tuple
    columns: tuple
    warmup: int      # untimed iterations first (graph capture, compilation, autotuning happen here)
    iters: int       # iterations per timed block
    repeats: int     # timed blocks; median and spread are over these


def default_plan(device, quick):
    on_gpu = torch.device(device).type == "cuda"
    if on_gpu:
        return Plan(tuple(MODELS), tuple(OBJECTIVES), (256,) if quick else (64, 128, 256, 512), tuple(COLUMNS),
                    warmup=3 if quick else 5, iters=10 if quick else 25, repeats=3 if quick else 5)
    if quick:  # CI-sized: the two 28x28 models, one small batch, a few iterations
        return Plan(("mlp-28", "dcgan-28"), ("none", "wgan-gp"), (16,), tuple(COLUMNS), warmup=1, iters=2, repeats=3)
    # steps and loop: what the user's `ganforge train` runs on this CPU, beside the columns it is compared with
    return Plan(tuple(MODELS), tuple(OBJECTIVES), (32,),
                ("eager-fp32", "eager-bf16", "compile", "eager-explicit", "steps", "loop"), warmup=2, iters=3,
                repeats=3)


def objective_config(objective):
    """The TrainConfig of an objective alone (its loss, penalty and intervals; every other field the default)."""
    return TrainConfig(**OBJECTIVES[objective])


def synthetic_dataset(data_shape, n):
    """``n`` random images in [-1, 1] with random labels: right shape, no files."""
    gen = torch.Generator().manual_seed(0)
    images = torch.rand((n, *data_shape), generator=gen) * 2 - 1
    labels = torch.randint(0, 10, (n,), generator=gen)
    return Dataset(images, labels, 10, "synthetic")


def bench_dataset(data_shape, batch_size):
    """The synthetic data a benchmark trains on: random images of ``data_shape``, enough for a few batches."""
    return synthetic_dataset(data_shape, max(4 * batch_size, 256))


def loop_block(plan):
    """The loop column's iterations per timed block: whole LOOP_STRETCH stretches, at least ``plan.iters``."""
    return LOOP_STRETCH * max(1, -(-plan.iters // LOOP_STRETCH))


def make_config(name, objective, column, batch_size, device):
    """The TrainConfig a column trains with; the loop column with the default run's side-work intervals."""
    model, data_shape = MODELS[name]
    settings = COLUMNS[column]
    loop = {}
    if column == "loop":
        loop = dict(LOOP_INTERVALS, iterations=10**9, progress=True)  # the bar runs as for a user, to os.devnull
    # The architecture every results file's rows have timed (width 64: the textbook MLP, DCGAN's base), without an
    # EMA, so rows stay comparable across commits whatever the shipped defaults become.
    impl = settings["kernels"]
    if impl == "auto" and torch.device(device).type == "cpu" and kernels.interpreter_on():
        # Triton's interpreter emulates each kernel program in Python (~1 ms each): a correctness path for the
        # tests, no speed path on any device, and what `auto` would pick here only because the suite turned it on
        impl = "ref"
    fields = dict(model=model, width=BENCH_WIDTH, ema=0.0, batch_size=batch_size, device=str(device),
                  precision=settings["precision"],
                  graphs=settings["graphs"], kernels=impl, progress=False, fid_samples=0,
                  penalty_grad=settings["penalty_grad"], compile=settings["compiled"] == "steps")
    return TrainConfig(**{**fields, **OBJECTIVES[objective], **loop})


def skip_reason(column, device, quick=False, objective=None):
    """Why ``column`` does not run on ``device`` (None when it does)."""
    on_gpu = torch.device(device).type == "cuda"
    penalized = objective is not None and objective_config(objective).penalty != "none"
    if column == "eager-explicit" and objective is not None and not penalized:
        return "no penalty: the same as eager-fp32"
    if column in ("ganforge", "graphs-ref") and not on_gpu:
        return "CUDA graphs need a CUDA device"
    if column == "compile-graphs" and not on_gpu:
        return "mode='reduce-overhead' captures CUDA graphs: it needs a CUDA device"
    if column == "compile" and quick and not on_gpu:
        return "torch.compile's CPU build takes minutes: not in a quick CPU run"
    if column.startswith("compile") and quick and penalized:
        return "torch.compile raises on the penalty's double backward; a full run records the error"
    if column == "compile-explicit" and quick:
        return "torch.compile's build of the whole steps takes minutes: not in a quick run"
    if column == "loop" and quick:
        return (f"the default run's side work comes in {LOOP_STRETCH:,}-iteration stretches (a checkpoint each); a "
                "quick run cannot afford such blocks, and shorter ones would carry more side work per iteration "
                "than the user's run")
    return None


class _GlobalOnly:
    """Stands in for FlopCounterMode's per-module tracker, whose backward hooks raise under the
    autograd.grad(create_graph=True) of a gradient penalty; only the global total is wanted here."""
    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def count_flops(session):
    """Model FLOPs (matrix products and convolutions, forward, backward and double backward) of one iteration."""
    counter = FlopCounterMode(display=False)
    if hasattr(counter, "mod_tracker"):
        counter.mod_tracker = _GlobalOnly()
    with counter:
        run_iteration(session, 0)
    return counter.get_total_flops()


def open_session(name, objective, column, batch_size, device, dataset):
    """A training session set up as ``column`` runs (compiled columns: fresh caches, then G and D compiled in the
    column's mode, or the whole steps by `--compile`). Drop it, then call ``release(column)``."""
    compiled = COLUMNS[column]["compiled"]
    if compiled:
        torch._dynamo.reset()  # fresh caches: no recompile limit carried over from earlier sessions
    session = build_session(make_config(name, objective, column, batch_size, device), dataset=dataset)
    if compiled and compiled != "steps":
        session.state.G = torch.compile(session.state.G, mode=compiled)
        session.state.D = torch.compile(session.state.D, mode=compiled)
    return session


class BenchLoop:
    """The loop column: the trainer's own TrainLoop over a session, writing its run folder into a temporary
    directory (removed by ``close``). ``iterations(n)`` trains n more iterations through TrainLoop.run."""

    def __init__(self, session):
        self.folder = tempfile.TemporaryDirectory(prefix="ganforge-bench-loop-")
        self.devnull = open(os.devnull, "w")
        self.loop = TrainLoop(session, Path(self.folder.name), 0, False, SignalGuard(), references=None,
                              progress_file=self.devnull)

    def iterations(self, n):
        self.loop.run(self.loop.iteration + n)

    def close(self):
        self.loop.__exit__(None, None, None)
        self.devnull.close()
        self.folder.cleanup()


def release(column):
    """After a column's session is dropped: compile caches cleared, device memory given back."""
    if COLUMNS[column]["compiled"]:
        torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def warmup_iterations(session, plan):
    """Untimed iterations first; a graphed runner captures after its own eager warm-up calls, so its capture
    and first replay stay untimed too."""
    return max(plan.warmup, (getattr(session.runner, "warmup", 0) + 2) if session.graphs else 0)


def compile_events():
    """How many graphs torch.compile has built so far: frames Dynamo converted (first compiles and recompiles) plus
    graphs Inductor compiled or loaded (a backward graph compiles lazily, on its first backward call)."""
    from torch._dynamo.utils import counters

    inductor = counters["inductor"]
    return (counters["frames"]["total"] + inductor["fxgraph_cache_miss"] + inductor["fxgraph_cache_hit"]
            + inductor["fxgraph_cache_bypass"])


class _Timed:
    """One column's session in an interleaved measurement: its iteration count, its samples, its warm-up and the
    compilations counted inside its timed work. The loop column trains through the trainer's loop (BenchLoop) in
    blocks of loop_block(plan) iterations and has no per-step split."""

    def __init__(self, session, plan, loop=None):
        self.session, self.loop, self.iteration = session, loop, 0
        self.block = loop_block(plan) if loop is not None else plan.iters
        self.block_ms, self.d_ms, self.g_ms = [], [], []
        self.warmup, self.warmup_s, self.compiles_timed, self.skipped = 0, 0.0, 0, None

    def iterations(self, n):
        if self.loop is not None:
            return self.loop.iterations(n)
        for _ in range(n):
            run_iteration(self.session, self.iteration)
            self.iteration += 1

    def warm_up(self, plan):
        """The untimed warm-up; when it compiled anything, whole penalty cycles more (every D step variant runs
        once per cycle) until one compiles nothing. Its seconds and iterations give the row's compile_s."""
        cfg = self.session.cfg  # a cycle runs both D step variants; a never-penalising interval is capped
        cycle = max(1, min(cfg.penalty_every, MAX_CYCLE) if cfg.penalty != "none" else 1)
        sync(self.session.device)
        start, before = time.perf_counter(), compile_events()
        self.warmup = warmup_iterations(self.session, plan)
        self.iterations(self.warmup)
        settled = compile_events() == before
        for _ in range(SETTLE_CYCLES if not settled else 0):
            before = compile_events()
            self.iterations(cycle)
            self.warmup += cycle
            if compile_events() == before:
                break
        sync(self.session.device)
        self.warmup_s = time.perf_counter() - start

    def time_block(self):
        before = compile_events()
        self.block_ms += time_blocks(lambda: self.iterations(self.block), self.session.device, repeats=1)
        self.compiles_timed += compile_events() - before

    def steps_once(self):
        """One iteration with D and G steps timed apart (device events between the steps, trainer order)."""
        if self.loop is not None:
            return
        session, cfg = self.session, self.session.cfg
        clock, kinds, before = StepClock(session.device), [], compile_events()
        sync(session.device)
        clock.mark()
        for penalize in cfg.penalized_d_steps(self.iteration):
            session.runner.d_step(penalize)
            clock.mark()
            kinds.append("d")
        session.runner.g_step()
        clock.mark()
        kinds.append("g")
        self.iteration += 1
        for ms, kind in zip(clock.intervals_ms(), kinds):
            (self.d_ms if kind == "d" else self.g_ms).append(ms)
        self.compiles_timed += compile_events() - before


def loop_over_budget(t, plan, probe=10):
    """Why the loop column's blocks are left out (None when they fit): ``probe`` untimed iterations estimate a
    block's seconds, and the blocks must fit LOOP_BUDGET_S unless --iters asked for blocks that long."""
    if t.loop is None or plan.iters >= LOOP_STRETCH:
        return None
    start = time.perf_counter()
    t.iterations(probe)
    t.warmup += probe
    estimate = (time.perf_counter() - start) / probe * t.block * plan.repeats
    if estimate <= LOOP_BUDGET_S:
        return None
    return (f"{plan.repeats} blocks of {t.block:,} iterations (the default run's side work comes once per "
            f"{LOOP_STRETCH:,}: a checkpoint) would take about {estimate:,.0f} s here, over the bench's "
            f"{LOOP_BUDGET_S} s; --iters {LOOP_STRETCH} runs them, shorter blocks would overstate the side work")


def measure_interleaved(sessions, plan, loops=None):
    """Warm every session up (compiled ones until compilation has settled), then time them interleaved: each of
    ``plan.repeats`` rounds runs one block per session (``plan.iters`` iterations; the loop column's
    loop_block(plan)), then up to STEP_SAMPLES rounds time one iteration's D and G steps per session.
    Interleaving spreads a shared machine's changing load evenly over the columns compared.

    loops: per session, its BenchLoop (the loop column) or None. Returns one _Timed per session and the warm-up
    iterations used. A loop column over its time budget is left out (its _Timed.skipped says why)."""
    timed = [_Timed(session, plan, loop) for session, loop in zip(sessions, loops or [None] * len(sessions))]
    for t in timed:
        t.warm_up(plan)
        t.skipped = loop_over_budget(t, plan)
    running = [t for t in timed if not t.skipped]
    for _ in range(plan.repeats):
        for t in running:
            t.time_block()
    for _ in range(min(plan.iters, STEP_SAMPLES)):
        for t in running:
            t.steps_once()
    return timed, [t.warmup for t in timed]


def _error_text(exc):
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:300]


def _new_row(name, objective, column, batch_size, plan):
    model, data_shape = MODELS[name]
    settings = COLUMNS[column]
    recipe = objective_config(objective)
    row = {"name": name, "model": model, "data_shape": list(data_shape), "objective": objective, "loss": recipe.loss,
           "penalty": recipe.penalty, "batch_size": batch_size, "column": column,
           "precision": settings["precision"], "graphs": settings["graphs"] == "on", "kernels": settings["kernels"],
           "compiled": settings["compiled"], "penalty_grad": None, "warmup": plan.warmup, "iters": plan.iters,
           "repeats": plan.repeats, "error": None, "skipped": None}
    row.update({key: None for key in ("images_per_sec", "images_per_sec_p20", "images_per_sec_p80", "spread",
                                      "ms_per_iter", "ms_per_d_step", "ms_per_g_step", "peak_mem_mb",
                                      "flops_per_iter", "tflops", "mfu", "speedup_vs_eager_fp32",
                                      "speedup_vs_best_other", "loop_efficiency", "compile_s",
                                      "timed_compiles")})
    return row


def _open_session(row, objective, device, dataset):
    """The column's session, and the row records what its settings resolved to on this device."""
    session = open_session(row["name"], objective, row["column"], row["batch_size"], device, dataset)
    row.update(penalty_grad=session.state.penalty_grad, precision=session.precision, graphs=session.graphs,
               kernels=kernels.resolve_impl(session.cfg.kernels, session.state.pixels),
               penalty=session.cfg.penalty, penalty_every=session.cfg.penalty_every,
               n_critic=session.cfg.n_critic)
    if row["column"] == "loop":
        row["loop_intervals"] = {key: getattr(session.cfg, key) for key in LOOP_INTERVALS}
    return session


def _fill_timing(row, timed):
    """The row's figures from its _Timed; none where its blocks were left out or torch.compile compiled inside
    them (that time is compilation, not the steps the user runs). A compiled column's compile_s: its warm-up's
    seconds beyond what as many steady iterations take."""
    row.update(warmup=timed.warmup, iters=timed.block, timed_compiles=timed.compiles_timed)
    if timed.skipped:
        row["skipped"] = timed.skipped
        return
    if timed.compiles_timed:
        row["error"] = (f"torch.compile compiled {timed.compiles_timed} graph(s) inside the timed blocks after "
                        f"{timed.warmup} warm-up iterations (a recompile or a variant the warm-up missed): no figure")
        return
    rate = quantiles([row["batch_size"] * timed.block / (ms * 1e-3) for ms in timed.block_ms])  # images/s
    ms_per_iter = quantiles(timed.block_ms).median / timed.block
    row.update(images_per_sec=rate.median, images_per_sec_p20=rate.p20, images_per_sec_p80=rate.p80,
               spread=rate.spread, ms_per_iter=ms_per_iter,
               ms_per_d_step=sum(timed.d_ms) / len(timed.d_ms) if timed.d_ms else None,
               ms_per_g_step=sum(timed.g_ms) / len(timed.g_ms) if timed.g_ms else None)
    if row["compiled"]:
        row["compile_s"] = max(0.0, timed.warmup_s - timed.warmup * ms_per_iter * 1e-3)


def run_columns(name, objective, columns, batch_size, device, plan, dataset, want_flops=True, quick=False):
    """The rows of one configuration. On CPU (a machine often shared) the plain columns are timed interleaved,
    all their sessions open at once; on a GPU, and for compiled columns (each resets torch.compile's caches),
    one column at a time, which also keeps each column's peak memory its own, except that the loop column is
    always timed interleaved with the steps column it is compared with. FLOPs are counted once, on the first
    eager column, and are the same for every column."""
    device = torch.device(device)
    rows = [_new_row(name, objective, column, batch_size, plan) for column in columns]
    for row in rows:
        row["skipped"] = skip_reason(row["column"], device, quick, objective)
    runnable = [row for row in rows if not row["skipped"]]
    if device.type == "cuda":
        groups = [[row] for row in runnable if row["column"] not in ("steps", "loop")]
        groups.append([row for row in runnable if row["column"] in ("steps", "loop")])
    else:
        groups = [[row for row in runnable if not row["compiled"]]] + [[row] for row in runnable if row["compiled"]]
    for group in groups:
        if not group:
            continue
        opened, loops = [], []
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            for row in group:
                try:
                    session = _open_session(row, objective, device, dataset)
                    loops.append(BenchLoop(session) if row["column"] == "loop" else None)
                    opened.append((row, session))
                except Exception as exc:  # noqa: BLE001 -- a failing column is a result
                    row["error"] = _error_text(exc)
            if not opened:
                continue
            try:
                timed, _ = measure_interleaved([session for _, session in opened], plan, loops)
            except Exception as exc:  # noqa: BLE001 -- e.g. compile + double backward: the error is the result
                for row, _ in opened:
                    row["error"] = _error_text(exc)
                continue
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
            for (row, session), t in zip(opened, timed):
                _fill_timing(row, t)
                row["peak_mem_mb"] = peak
                if want_flops and row["column"].startswith("eager") and row["images_per_sec"]:
                    want_flops = False
                    try:
                        row["flops_per_iter"] = count_flops(session)
                    except Exception as exc:  # noqa: BLE001 -- MFU is missing then, the timing still stands
                        row["flops_error"] = _error_text(exc)
        finally:
            for loop in loops:
                if loop is not None:
                    loop.close()
            opened = loops = None
            for row in group:
                release(row["column"])
    return rows


def add_derived(rows, matmul_tflops_bf16, matmul_tflops_fp32=None):
    """Fill FLOPs, achieved TFLOP/s, MFU and speedups across the columns of each configuration.

    MFU is quoted against the measured matrix-product rate of the precision the row ran in (fp16 against the bf16
    rate: the same units): an fp32 row on a CPU that emulates bf16 would read thousands of percent against bf16's."""
    rates = {"bf16": matmul_tflops_bf16, "fp16": matmul_tflops_bf16, "fp32": matmul_tflops_fp32}
    groups = {}
    for row in rows:
        groups.setdefault((row["name"], row.get("objective", row["penalty"]), row["batch_size"]), []).append(row)
    for group in groups.values():
        flops = next((r["flops_per_iter"] for r in group if r["flops_per_iter"]), None)
        timed = [r for r in group if r["images_per_sec"]]
        baseline = next((r for r in timed if r["column"] == BASELINE), None)
        for row in timed:
            if flops:
                row["flops_per_iter"] = flops
                row["tflops"] = flops / (row["ms_per_iter"] * 1e-3) / 1e12
                rate = rates.get(row.get("precision"))
                row["mfu"] = row["tflops"] / rate if rate else None
            if baseline is not None:
                row["speedup_vs_eager_fp32"] = row["images_per_sec"] / baseline["images_per_sec"]
            others = [r["images_per_sec"] for r in timed if r is not row and r["column"] not in OWN_COLUMNS]
            if others:
                row["speedup_vs_best_other"] = row["images_per_sec"] / max(others)
        steps = next((r for r in timed if r["column"] == "steps"), None)
        for row in timed:
            if row["column"] == "loop" and steps is not None:
                row["loop_efficiency"] = row["images_per_sec"] / steps["images_per_sec"]
    return rows


def train_rows(device, quick=False, matmul_tflops_bf16=None, plan=None, log=print, matmul_tflops_fp32=None,
               **overrides):
    """Run the sweep; ``overrides`` replace fields of the default plan (models=, batch_sizes=, columns=, ...)."""
    plan = plan or default_plan(device, quick)
    for key, value in overrides.items():
        if value is not None:
            setattr(plan, key, tuple(value) if isinstance(value, (list, tuple)) else value)
    for name in plan.models:
        if name not in MODELS:
            raise ValueError(f"unknown bench model {name!r}; expected one of {tuple(MODELS)}")
    for column in plan.columns:
        if column not in COLUMNS:
            raise ValueError(f"unknown bench column {column!r}; expected one of {tuple(COLUMNS)}")
    for objective in plan.objectives:
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown bench objective {objective!r}; expected one of {tuple(OBJECTIVES)}")
    rows = []
    for name in plan.models:
        for batch_size in plan.batch_sizes:
            dataset = bench_dataset(MODELS[name][1], batch_size)
            for objective in plan.objectives:
                batch_rows = run_columns(name, objective, plan.columns, batch_size, device, plan, dataset,
                                         quick=quick)
                rows += batch_rows
                if log:
                    for row in batch_rows:
                        log(_progress_line(row))
    return add_derived(rows, matmul_tflops_bf16, matmul_tflops_fp32)


def _progress_line(row):
    head = f"  train {row['name']:<9} {row['objective']:<8} batch {row['batch_size']:<4} {row['column']:<11}"
    if row["skipped"]:
        return f"{head} skipped: {row['skipped']}"
    if row["error"]:
        return f"{head} error: {row['error']}"
    compiled = f", compiled in {row['compile_s']:,.1f} s" if row.get("compile_s") is not None else ""
    return f"{head} {row['images_per_sec']:>12,.0f} img/s  (spread {row['spread']:.1%}{compiled})"
