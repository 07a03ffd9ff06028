"""Gradient averaging across torchrun ranks, two ways, on the same D step: one flat all-reduce after the backward
(what engine.steps does, inside the captured step) against DDP's bucketed all-reduces overlapped with the backward.

    torchrun --standalone --nproc_per_node 2 -m ganforge bench grad-sync [--model mlp|dcgan] [--batch-per-rank 64]
                                                                          [--device cpu|cuda] [--out FILE.json]

Each method runs D's forward, its non-saturating loss on random images, the backward, the gradient averaging and
an Adam step; "no sync" is the same step without averaging, the compute floor. The methods are timed interleaved
(one block of each in turn, median over blocks), eagerly: DDP's reducer runs host-side hooks that a CUDA graph
cannot hold without DDP's own static-graph mode. Rank 0 writes the results.
"""
import json
import os
import statistics
import time

import torch
from torch.nn import functional as F

from ..engine.provenance import provenance


def add_arguments(parser):
    parser.add_argument("--model", choices=("mlp", "dcgan"), default="mlp")
    parser.add_argument("--batch-per-rank", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")


def run(args):
    """Defaults: --device cpu, --repeats 7 timed blocks per method, --out runs/bench/grad-sync.json."""
    device_name, blocks, out = args.device or "cpu", args.repeats or 7, args.out or "runs/bench/grad-sync.json"

    from torch import distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from ..engine import distributed
    from ..engine.io import atomic_write_json
    from ..models import build_models

    world = distributed.from_environment()
    if not world.launched:
        raise ValueError("start with torchrun: torchrun --standalone --nproc_per_node 2 -m ganforge bench grad-sync")
    device = world.device(device_name)
    world.start(device)
    torch.manual_seed(0)
    _, D = build_models(args.model, (1, 28, 28), impl="ref")
    D = D.to(device)
    world.broadcast_modules_(D)
    x = torch.randn(args.batch_per_rank, 1, 28, 28, device=device)
    opt = torch.optim.Adam(D.parameters(), lr=1e-4)
    ddp = DistributedDataParallel(D, device_ids=[device.index] if device.type == "cuda" else None)

    def step(method):
        opt.zero_grad(set_to_none=True)
        scores = (ddp if method == "ddp" else D)(x, None)
        F.softplus(-scores).mean().backward()
        if method == "flat all-reduce":
            world.average_([p.grad for p in D.parameters()])
        opt.step()

    methods = ("no sync", "flat all-reduce", "ddp")
    times = {m: [] for m in methods}
    for block in range(blocks + 1):  # the first block of each method is warm-up
        for method in methods:
            dist.barrier()
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.steps):
                step(method)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if block:
                times[method].append((time.perf_counter() - start) / args.steps * 1000)
    ms = {m: statistics.median(v) for m, v in times.items()}
    ms = {m: world.max(round(v * 1000)) / 1000 for m, v in ms.items()}  # the slowest rank sets the pace
    if world.is_main:
        params = sum(p.numel() for p in D.parameters())
        results = {"schema": "ganforge-grad-sync/1", "model": args.model, "parameters": params,
                   "world_size": world.world_size, "batch_per_rank": args.batch_per_rank,
                   "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {os.cpu_count()} cores",
                   "threads_per_rank": torch.get_num_threads(), **provenance(),
                   "ms_per_step": ms, "sync_ms": {m: round(ms[m] - ms["no sync"], 3) for m in methods if m != "no sync"},
                   "blocks": blocks, "steps_per_block": args.steps}
        atomic_write_json(out, results)
        print(json.dumps(results["ms_per_step"]), json.dumps(results["sync_ms"]))
        print(f"results written to {out}")
    # DDP's reducer holds the process group: release it, and let every rank arrive, before the group goes (a rank
    # that tore the group down under a live reducer was seen to abort at exit).
    ddp = step = None
    dist.barrier()
    world.stop()
    return 0
