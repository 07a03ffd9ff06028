"""What a run writes into its folder: sample grids from fixed latents, checkpoints, and summary.json with what the
ranks, devices and kernels were."""
import json

import torch

from .. import kernels
from ..models import draw_attributes

from . import checkpoint as ckpt
from . import distributed
from .images import save_samples
from .io import atomic_write_json, strict_json
from .sampling import run_generator
from .provenance import provenance

SAMPLE_GRID = 64  # images in each sample grid written during training


def fixed_latents(cfg, G, device, n=SAMPLE_GRID):
    """The same z (and labels: each row one class; or attribute vectors from G's bank) for every sample grid, so
    grids show progress."""
    gen = torch.Generator().manual_seed(cfg.seed + 12345)
    z = torch.randn(n, cfg.z_dim, generator=gen).to(device)
    labels = torch.arange(n, device=device) % G.num_classes if G.num_classes else None
    if G.attribute_names:
        labels = draw_attributes(G, n, torch.Generator(device).manual_seed(cfg.seed + 12346))
    return z, labels


def write_samples(session, z, labels, path, tb=None, iteration=0):
    """A sample grid (or scatter plot) from the fixed latents, also sent to TensorBoard when it is on."""
    samples = run_generator(session.state.sampling_generator(), z, labels)
    real = session.dataset.pixels[:2000] if len(session.dataset.data_shape) == 1 else None  # 2-D points
    classes = session.state.num_classes
    nrow = classes if classes and labels is not None and classes <= 16 else None
    if tb is not None:
        tb.samples(samples, iteration, nrow)
    return save_samples(samples, path, nrow=nrow, real_points=real)


def save_checkpoint(session, out, iteration, history=None):
    """Checkpoint into the run folder, keeping the newest --keep-checkpoints (rank 0 alone writes). ``history``:
    the run's figures so far (training time, the FID curve), which a resume carries on."""
    state = session.state
    if not session.world.is_main:
        return None
    return ckpt.save_run_checkpoint(out, state, iteration, session.dataset.data_shape, state.num_classes,
                                    keep=session.cfg.keep_checkpoints,
                                    extra={"rollbacks": session.rollbacks, "history": history or {},
                                           **world_fields(session)})


def world_fields(session):
    """What summary.json and checkpoints record of the ranks: how many, the batch each and in all, BatchNorm."""
    world, cfg = session.world, session.cfg
    has_norm = bool(distributed.batch_norm_modules(session.state.G) + distributed.batch_norm_modules(session.state.D))
    if not has_norm:
        norm = None
    elif world.world_size == 1:
        norm = "global batch"  # one process sees the whole batch
    else:
        norm = "synced across ranks" if cfg.sync_bn else "per rank"
    return {"world_size": world.world_size, "batch_per_rank": cfg.batch_size // world.world_size,
            "global_batch": cfg.batch_size, "batch_norm_statistics": norm}


def write_summary(session, out, timer, iteration, fields):
    """summary.json (rank 0 writes it): ``fields`` (the status and scores) beside the run's time, images/s, device,
    precision, kernels, data, ranks, provenance and config. Returns what the file holds."""
    cfg = session.cfg
    seconds, images = timer.totals()  # of the whole history: a resumed run's clock starts at its checkpoint's
    summary = {
        **fields,
        "iterations": iteration,
        "images_per_sec": images / seconds if seconds > 0 else None,
        "train_seconds": seconds,
        "device": torch.cuda.get_device_name(session.device) if session.device.type == "cuda" else "cpu",
        "precision": session.precision,
        "graphs": session.graphs,
        "penalty_grad": session.state.penalty_grad,  # the input gradient the penalty used: explicit, autograd or None
        "data": "streamed" if session.stream is not None else "resident",
        **({"input_wait_seconds": round(session.stream.total_wait_seconds, 3),
            "input_wait_share": round(session.stream.total_wait_seconds / seconds, 4) if seconds > 0
            else None} if session.stream is not None else {}),
        "kernels": kernels.resolve_impl(cfg.kernels, session.state.pixels),  # what "auto" became here
        **provenance(),  # commit, command, date, torch and python versions
        "rollbacks": session.rollbacks,
        **world_fields(session),
        **session.resume_note,
        "config": cfg.to_dict(),
    }
    if session.world.is_main:
        atomic_write_json(out / "summary.json", summary)
    return json.loads(strict_json(summary))  # what the file holds: NaN became null
