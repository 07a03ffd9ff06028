"""What one training step dispatches, counted: a performance gate that wall time cannot make flaky.

    ganforge bench counts [--device cpu|cuda] [--out FILE.json]

For each step kind of the shipped recipes (the D step, the penalised D step, the G step, the EMA update), for the
MLP and DCGAN models and the objectives below, one step runs under a TorchDispatchMode after a warm-up step of
every kind (lazy state such as the optimizers' is made on the first step). Per step it records:

- ops: the operator calls that reach the dispatcher below autograd (aten operators, the backward's included, and
  the profiler's record_function markers the steps set), also counted by name (``operators``), the optimizer
  included. A composite operator counts as the operators it is made of; what a kernel calls inside itself does
  not count;
- allocations / bytes: the tensors those operators return whose storage none of their inputs holds (new
  storages: a view or an in-place result is not counted), and those storages' bytes. Memory an operator takes
  for itself and frees before returning (workspaces, temporaries inside one kernel) is not seen;
- host_reads: calls of Tensor.item / tolist / cpu / numpy / float() / int() / bool(), plus aten
  ``_local_scalar_dense`` calls made outside them (a read from C++ code).

The G step is what the engine's g_step runs: its EMA update included; "ema" is that update alone. Operator and
allocation counts depend on the code path and the tensors' ranks, not on widths or batch sizes, so small models
keep this fast; bytes do depend on the sizes fixed below. The reference kernels, fp32, graphs off and a fixed seed
make two runs give the same counts.

On CUDA (--device cuda) each recipe also runs as `ganforge train` runs it there, its steps captured in CUDA graphs
(Triton kernels, the default precision), and the profiler counts the kernels one replay of each captured step
launches (``graph_launches``: {step kind: kernels}). The counts above are eager and always measured on the
deterministic path; the launches are reported, not gated (cuDNN's benchmark mode may pick a plan with another
kernel count on another GPU or driver).
"""
import collections
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..engine.config import TrainConfig
from ..engine.provenance import command_line
from ..engine.session import build_session
from .results import atomic_write_json
from .train_bench import synthetic_dataset

SCHEMA = "ganforge-counts/1"
BASELINE_COMMAND = "ganforge bench counts --out bench/counts_baseline.json"
DATA_SHAPE = (1, 28, 28)
BATCH_SIZE = 8
SEED = 0
MODELS = {"mlp": {"width": 8}, "dcgan": {"width": 4}}  # small widths: operator counts do not depend on them
OBJECTIVES = {
    "default": {},  # `ganforge train`'s objective: non-saturating loss, R1 on every 4th D step
    "wgan-gp": {"loss": "wgan", "penalty": "wgan-gp"},
    "r1r2": {"loss": "rpgan", "penalty": "r1+r2"},  # R3GAN's: relativistic pairing, R1 + R2 on every D step
}
COUNTS = ("ops", "allocations", "bytes", "host_reads")
HOST_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")


class StepCounter(TorchDispatchMode):
    """Counts the operators dispatched while it is active, the new storages they return, and host reads."""

    def __init__(self):
        super().__init__()
        self.operators = collections.Counter()
        self.allocations = 0
        self.bytes = 0
        self.host_reads = 0
        self.in_host_read = 0  # > 0 inside a patched Tensor read method: its own _local_scalar_dense is not extra

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        self.operators[name] += 1
        if func is torch.ops.aten._local_scalar_dense.default and not self.in_host_read:
            self.host_reads += 1
        out = func(*args, **kwargs)
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if storage.data_ptr() not in inputs:
                    inputs.add(storage.data_ptr())  # two outputs sharing one new storage count once
                    self.allocations += 1
                    self.bytes += storage.nbytes()
        return out

    def totals(self):
        return {"ops": sum(self.operators.values()), "allocations": self.allocations, "bytes": self.bytes,
                "host_reads": self.host_reads, "operators": dict(sorted(self.operators.items()))}


@contextmanager
def counting():
    """A StepCounter active, with the Tensor methods that read values to the host counted too."""
    counter = StepCounter()
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def counted(name):
        def read(self, *args, **kwargs):
            counter.host_reads += 1
            counter.in_host_read += 1
            try:
                return originals[name](self, *args, **kwargs)
            finally:
                counter.in_host_read -= 1
        return read
    try:
        for name in HOST_READS:
            setattr(torch.Tensor, name, counted(name))
        with counter:
            yield counter
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)


def recipe_config(model, objective, device):
    """The recipe's TrainConfig at the counts' small sizes, on the deterministic path (reference kernels, fp32)."""
    return TrainConfig(model=model, batch_size=BATCH_SIZE, device=str(device), kernels="ref", precision="fp32",
                       graphs="off", seed=SEED, fid_samples=0, progress=False, **MODELS[model], **OBJECTIVES[objective])


def step_kinds(session):
    """{kind: the function running one step of it} for the kinds this recipe runs."""
    state, cfg = session.state, session.cfg
    kinds = {}
    if cfg.penalty == "none" or cfg.penalty_every > 1:
        kinds["d"] = lambda: state.d_step(False)
    if cfg.penalty != "none":
        kinds["d-penalized"] = lambda: state.d_step(True)
    kinds["g"] = state.g_step
    if state.G_ema is not None:
        kinds["ema"] = state.update_ema
    return kinds


def count_recipe(model, objective, device="cpu"):
    """{kind: counts} of one step of each kind of the recipe, after one warm-up step of every kind."""
    torch.manual_seed(SEED)
    session = build_session(recipe_config(model, objective, device),
                            dataset=synthetic_dataset(DATA_SHAPE, 4 * BATCH_SIZE))
    kinds = step_kinds(session)
    for step in kinds.values():
        step()
    counts = {}
    for kind, step in kinds.items():
        with counting() as counter:
            step()
        counts[kind] = counter.totals()
    return counts


def count_steps(device="cpu"):
    """{"model/objective/kind": counts} over every model and objective; the EMA once per model (it is the same
    for every objective). One torch thread: the counts do not depend on it, and on a busy machine more threads
    only wait for each other over these tiny tensors."""
    steps = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for model in MODELS:
            for objective in OBJECTIVES:
                for kind, counts in count_recipe(model, objective, device).items():
                    if kind != "ema" or objective == "default":
                        steps[f"{model}/{objective}/{kind}"] = counts
    finally:
        torch.set_num_threads(threads)
    return steps


GRAPH_KINDS = {"d": lambda runner: runner.d_step(False), "d_penalty": lambda runner: runner.d_step(True),
               "g": lambda runner: runner.g_step()}


def kernels_launched(events):
    """The device kernels among profiler events, counted by name: events on the CUDA side, copies and fills
    (Memcpy / Memset, not kernels) left out."""
    launched = collections.Counter()
    for event in events:
        on_device = str(getattr(event, "device_type", "")).endswith("CUDA")
        if on_device and not event.name.lower().startswith(("memcpy", "memset")):
            launched[event.name] += 1
    return launched


def graph_launches(model, objective, device="cuda"):
    """{kind: kernels one CUDA graph replay of that step launches} for the recipe run as on a GPU (graphs on,
    Triton kernels): each kind is captured first (the runner's warm-up and capture), then one replay is
    profiled."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(SEED)
    cfg = TrainConfig(model=model, batch_size=BATCH_SIZE, device=str(device), graphs="on", seed=SEED,
                      fid_samples=0, progress=False, **MODELS[model], **OBJECTIVES[objective])
    session = build_session(cfg, dataset=synthetic_dataset(DATA_SHAPE, 4 * BATCH_SIZE))
    kinds = {kind: step for kind, step in GRAPH_KINDS.items()
             if kind != "d_penalty" or cfg.penalty != "none"}
    launches = {}
    for kind, step in kinds.items():
        while kind not in session.runner.graphs:  # warm-up calls, then the capture
            step(session.runner)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step(session.runner)
            torch.cuda.synchronize()
        launches[kind] = sum(kernels_launched(prof.events()).values())
    return launches


def count_graph_launches(device):
    """{"model/objective": {kind: kernels per replay}} on CUDA; {} elsewhere (a CPU has no graphs)."""
    if torch.device(device).type != "cuda":
        return {}
    return {f"{model}/{objective}": graph_launches(model, objective, device)
            for model in MODELS for objective in OBJECTIVES}


def torch_major_minor(version=None):
    return ".".join((version or torch.__version__).split(".")[:2])


def measure(device="cpu"):
    """The counts file: a header (the command, the torch version) and the counts per step."""
    widths = ", ".join(f"{model} {settings['width']}" for model, settings in MODELS.items())
    return {"schema": SCHEMA, "command": command_line(), "torch": torch.__version__,
            "torch_major_minor": torch_major_minor(), "device": str(device),
            "note": "counts are per step, one step after a warm-up step of every kind; fp32, reference kernels, "
                    f"graphs off, batch {BATCH_SIZE}, widths {widths}, "
                    f"{'x'.join(map(str, DATA_SHAPE))} images, seed {SEED}; write with `{BASELINE_COMMAND}`",
            "steps": count_steps(device), "graph_launches": count_graph_launches(device)}


def compare_counts(baseline_steps, steps):
    """(rises, falls): one line per step whose counts rose above / fell below the baseline, a rise with the
    operators that changed. A step missing from the baseline rises from zero."""
    rises, falls = [], []
    for key, counts in steps.items():
        base = baseline_steps.get(key, {})
        changes = [(name, base.get(name, 0), counts[name]) for name in COUNTS]
        rose = [f"{name} {before:,} -> {now:,}" for name, before, now in changes if now > before]
        fell = [f"{name} {before:,} -> {now:,}" for name, before, now in changes if now < before]
        if rose:
            rises.append(f"{key}: {', '.join(rose)}{operator_diff(base.get('operators', {}), counts['operators'])}")
        if fell:
            falls.append(f"{key}: {', '.join(fell)}")
    return rises, falls


def operator_diff(before, now):
    """The per-operator count changes between two {operator: count} tables, as text ('' when none changed)."""
    changes = [f"{op} {before.get(op, 0)} -> {now.get(op, 0)}" for op in sorted(set(before) | set(now))
               if before.get(op, 0) != now.get(op, 0)]
    return f"; operators: {', '.join(changes)}" if changes else ""


def markdown_table(results):
    lines = [f"counts per step, {results['device']}, torch {results['torch']}:", "",
             "| step | ops | allocations | bytes | host reads |", "|---|---:|---:|---:|---:|"]
    for key, counts in results["steps"].items():
        lines.append(f"| {key} | " + " | ".join(f"{counts[name]:,}" for name in COUNTS) + " |")
    if results.get("graph_launches"):
        lines += ["", "kernels launched per CUDA graph replay:", "", "| recipe | step | kernels |", "|---|---|---:|"]
        for recipe, kinds in results["graph_launches"].items():
            lines += [f"| {recipe} | {kind} | {count:,} |" for kind, count in kinds.items()]
    return "\n".join(lines) + "\n"


def add_arguments(parser):
    """Only the shared options: --device (cpu, the committed baseline's; cuda adds the graph launches) and --out
    (bench/counts_baseline.json is the test's baseline)."""


def run(args):
    results = measure(args.device or "cpu")
    print(markdown_table(results), end="")
    if args.out:
        atomic_write_json(args.out, results, indent=1)
        print(f"counts written to {args.out}")
    return 0
