"""The training loop: build a session (data, models, train state, runner), iterate, log, sample, checkpoint, score."""
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .. import kernels
from ..models import build_models

from . import checkpoint as ckpt
from .config import TrainConfig
from .data import Dataset, load_dataset, require_labels
from .evaluate import run_generator
from .images import save_loss_curve, save_samples
from .io import atomic_write_text
from .tensorboard import TensorBoardLog
from .steps import TrainState

SAMPLE_GRID = 64  # images in each sample grid written during training


@dataclass
class Session:
    """Everything one training run holds: resolved settings, data on the device, the train state and its runner."""
    cfg: TrainConfig
    device: torch.device
    precision: str
    graphs: bool
    channels_last: bool
    dataset: Dataset
    state: TrainState
    runner: object  # EagerRunner or engine.graphs.GraphRunner: d_step(penalize), g_step()


class EagerRunner:
    """Calls the step functions directly: the CPU path and the reference for the graphed runner."""

    def __init__(self, state):
        self.state = state

    def d_step(self, penalize):
        return self.state.d_step(penalize)

    def g_step(self):
        return self.state.g_step()


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asked for CUDA, but no CUDA device is available here; use --device cpu")
    return device


def resolve_precision(precision, device):
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def resolve_graphs(graphs, device):
    if graphs == "on" and device.type != "cuda":
        raise ValueError("--graphs on needs a CUDA device (CUDA graphs capture GPU work); "
                         f"this run is on {device.type}: use --graphs off")
    return graphs == "on" or (graphs == "auto" and device.type == "cuda")


def check_fits_on_device(dataset, device, share=0.5):
    """The steps gather batches from a device-resident dataset; refuse one that would crowd out the models."""
    if device.type != "cuda":
        return
    needed = dataset.images.numel() * dataset.images.element_size()
    free, _ = torch.cuda.mem_get_info(device)
    if needed > share * free:
        raise ValueError(f"dataset {dataset.name!r} needs {needed / 2**30:.1f} GiB on the device but only "
                         f"{free / 2**30:.1f} GiB are free (at most half is used for data): use a smaller "
                         "--image-size or a subset of the data")


def build_session(cfg, dataset=None):
    """Validate the config, load the data onto the device, build G and D, their train state and the runner."""
    cfg.validate()
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    graphs = resolve_graphs(cfg.graphs, device)
    torch.manual_seed(cfg.seed)
    if dataset is None:
        dataset = load_dataset(cfg.dataset, cfg.data_path, split="train", image_size=cfg.image_size,
                               channels=cfg.channels, seed=cfg.seed)
    if cfg.conditional:
        require_labels(dataset)
    if cfg.batch_size > len(dataset):
        raise ValueError(f"--batch-size {cfg.batch_size} is larger than the dataset ({len(dataset)} samples)")
    if cfg.augment != "none" and len(dataset.data_shape) != 3:
        raise ValueError(f"--augment applies to images; dataset {dataset.name!r} is {dataset.data_shape} points")
    num_classes = dataset.num_classes if cfg.conditional else 0
    # BatchNorm mixes samples, which a per-sample gradient penalty must not see: D has none then.
    G, D = build_models(cfg.model, dataset.data_shape, cfg.z_dim, num_classes, cfg.width,
                        d_batch_norm=cfg.penalty == "none", impl=cfg.kernels)
    is_conv = cfg.model == "dcgan"
    channels_last = is_conv and (cfg.channels_last == "on" or (cfg.channels_last == "auto" and device.type == "cuda"))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    G, D = G.to(device, memory_format=memory_format), D.to(device, memory_format=memory_format)
    check_fits_on_device(dataset, device)
    images = dataset.images.to(device)  # the whole dataset resides on the device; steps gather batches there
    labels = dataset.labels.to(device) if dataset.labels is not None else None
    state = TrainState(cfg, G, D, images, labels, num_classes, device, precision, channels_last)
    if graphs:
        from .graphs import GraphRunner
        runner = GraphRunner(state)
    else:
        runner = EagerRunner(state)
    return Session(cfg, device, precision, graphs, channels_last, dataset, state, runner)


def run_iteration(session, iteration):
    """One training iteration: n_critic D steps (the penalty on its lazy interval), then one G step."""
    for penalize in session.cfg.penalized_d_steps(iteration):
        session.runner.d_step(penalize)
    session.runner.g_step()


def fixed_latents(cfg, num_classes, device, n=SAMPLE_GRID):
    """The same z (and labels: each row one class) for every sample grid, so grids show progress."""
    gen = torch.Generator().manual_seed(cfg.seed + 12345)
    z = torch.randn(n, cfg.z_dim, generator=gen).to(device)
    labels = torch.arange(n, device=device) % num_classes if num_classes else None
    return z, labels


def write_samples(session, z, labels, path, tb=None, iteration=0):
    """A sample grid (or scatter plot) from the fixed latents, also sent to TensorBoard when it is on."""
    samples = run_generator(session.state.sampling_generator(), z, labels)
    real = session.dataset.images[:2000] if session.dataset.images.dim() == 2 else None
    nrow = session.state.num_classes if labels is not None and session.state.num_classes <= 16 else None
    if tb is not None:
        tb.samples(samples, iteration, nrow)
    return save_samples(samples, path, nrow=nrow, real_points=real)


def train(cfg, dataset=None, resume=None):
    """Train per ``cfg``; write samples, log, checkpoints, loss curve and summary.json into cfg.out."""
    session = build_session(cfg, dataset)
    state, device = session.state, session.device
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tb = TensorBoardLog(out / "tensorboard") if cfg.tensorboard else None
    cfg.write_json(out / "config.json")  # `ganforge train --config out/config.json` repeats this run
    start = 0
    if resume:
        start = ckpt.restore_training_state(state, ckpt.load_checkpoint(resume, map_location=device), resume)
    z_fixed, labels_fixed = fixed_latents(cfg, state.num_classes, device)
    log_path = out / "log.jsonl"
    records = []
    if resume and log_path.exists():
        records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
        records = [r for r in records if r["iteration"] <= start]
    log_file = open(log_path, "w")
    for r in records:
        log_file.write(json.dumps(r) + "\n")

    train_seconds, images_seen = 0.0, 0
    bar = tqdm(total=cfg.iterations, initial=start, disable=not cfg.progress, desc="train", unit="it", dynamic_ncols=True)
    interval_start, interval_images, side_seconds = time.perf_counter(), 0, 0.0
    try:
        for iteration in range(start, cfg.iterations):
            run_iteration(session, iteration)
            interval_images += cfg.batch_size
            done = iteration + 1
            bar.update(1)
            if done % cfg.log_every == 0 or done == cfg.iterations:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - interval_start - side_seconds  # samples and checkpoints excluded
                train_seconds += elapsed
                images_seen += interval_images
                record = {"iteration": done, **state.read_and_reset_stats(),
                          "images_per_sec": interval_images / elapsed, "seconds": train_seconds}
                records.append(record)
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                if tb is not None:
                    tb.scalars(record)
                bar.set_postfix(d=f"{record['d_loss']:.3f}", g=f"{record['g_loss']:.3f}",
                                img_s=f"{record['images_per_sec']:.0f}")
                interval_start, interval_images, side_seconds = time.perf_counter(), 0, 0.0
            if device.type == "cuda" and (done % cfg.sample_every == 0 or done % cfg.ckpt_every == 0):
                torch.cuda.synchronize()  # queued steps finish inside the timed interval, not the side work
            side_start = time.perf_counter()
            if done % cfg.sample_every == 0:
                write_samples(session, z_fixed, labels_fixed, out / f"samples_{done:06d}.png", tb, done)
            if done % cfg.ckpt_every == 0:
                ckpt.save_checkpoint(out / "checkpoint.pt", state, done, session.dataset.data_shape, state.num_classes)
            side_seconds += time.perf_counter() - side_start
    finally:
        bar.close()
        log_file.close()

    ckpt.save_checkpoint(out / "checkpoint.pt", state, cfg.iterations, session.dataset.data_shape, state.num_classes)
    write_samples(session, z_fixed, labels_fixed, out / "samples_final.png", tb, cfg.iterations)
    if records:
        save_loss_curve(records, out / "loss_curve.png")

    from .evaluate import evaluate_generator
    scores = evaluate_generator(state.sampling_generator(), cfg, state.num_classes, device, cfg.fid_samples,
                                progress=cfg.progress)
    summary = {
        **scores,
        "iterations": cfg.iterations,
        "images_per_sec": images_seen / train_seconds if train_seconds > 0 else None,
        "train_seconds": train_seconds,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": session.precision,
        "graphs": session.graphs,
        "penalty_grad": state.penalty_grad,  # the input gradient the penalty used: explicit, autograd or None
        "kernels": kernels.resolve_impl(cfg.kernels, state.images),  # what "auto" became on this device
        "torch": torch.__version__,
        "config": cfg.to_dict(),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    if tb is not None:
        tb.scalars({"iteration": cfg.iterations, "fid": summary["fid"], "fid_real_floor": summary["fid_real_floor"]},
                   prefix="eval")
        tb.close()
    return summary
