"""The training loop: build a session (data, models, train state, runner), iterate, log, sample, checkpoint, score."""
import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from .. import kernels
from ..models import build_models

from . import checkpoint as ckpt
from .config import TrainConfig
from .data import Dataset, load_dataset, require_labels
from .evaluate import FIDTracker, check_scoring, evaluate_generator, run_generator
from .images import save_fid_curve, save_loss_curve, save_samples
from .io import atomic_write_json, strict_json
from .rundir import RunDir
from .runlog import RunLog, SignalGuard
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
    rollbacks: int = 0  # --on-nan rollback: how many so far (carried in checkpoints)
    resume_note: dict = field(default_factory=dict)  # where a resumed run came from and what it changed
    resume_message: str = ""


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


class TrainingStopped(Exception):
    """The run stopped early but cleanly (its outputs are consistent); ``exit_code`` is the command's."""
    exit_code = 1


class TrainingDiverged(TrainingStopped):
    def __init__(self, message, iteration):
        super().__init__(message)
        self.iteration = iteration


class TrainingInterrupted(TrainingStopped):
    def __init__(self, message, signum):
        super().__init__(message)
        self.exit_code = 128 + signum


def inject_fault_for_tests(state, iteration, rollbacks, nan_at):
    """Test hook: GANFORGE_TEST_NAN_AT=N (read once per run into ``nan_at``) poisons one D weight with NaN after
    iteration N, once per run (never after a rollback), so the divergence guard and rollback are tested on a real
    non-finite weight."""
    if nan_at is not None and nan_at == iteration + 1 and rollbacks == 0:
        with torch.no_grad():
            next(state.D.parameters()).view(-1)[0] = float("nan")


def train(cfg, dataset=None, resume=None, overwrite=False):
    """Train per ``cfg``; write samples, log, checkpoints, loss curve and summary.json into cfg.out.

    resume: a checkpoint file or a run folder (its newest loadable checkpoint) to continue from.
    overwrite: replace a finished or started run in cfg.out instead of refusing.
    """
    cfg.validate()
    out = Path(cfg.out)
    resuming_here = bool(resume) and out.resolve() in (Path(resume).resolve(), Path(resume).resolve().parent)
    # The folder is locked first, so a second run into it fails at once; nothing in it changes before training.
    with RunDir(out).open(resume=resuming_here, overwrite=overwrite) as run_dir, SignalGuard() as signals:
        session = build_session(cfg, dataset)
        references = check_scoring(cfg)  # FID's backbone and held-out split fail here, not after training
        start = restore(session, resume) if resume else 0
        run_dir.clear_previous_run()
        return train_loop(session, out, start, resume is not None, signals, references)


def restore(session, resume):
    path, state, skipped = ckpt.find_resume_checkpoint(resume, session.device)
    for bad, reason in skipped:
        print(f"skipping {bad}: {reason}", file=sys.stderr)
    ckpt.check_same_architecture(state, session.cfg, path)
    if state["iteration"] >= session.cfg.iterations:
        raise ValueError(f"--iterations {session.cfg.iterations} is not above the iteration of {path} "
                         f"({state['iteration']}): nothing left to train; ask for more iterations")
    start = ckpt.restore_training_state(session.state, state, path)
    changes = ckpt.hyperparameter_changes(state["config"], session.cfg)
    session.rollbacks = state.get("rollbacks", 0)
    session.resume_note = {"resumed_from": str(path), "resumed_at": start,
                           "changes": {ckpt.flag(k): {"was": a, "now": b} for k, (a, b) in changes.items()}}
    changed = ", ".join(f"{ckpt.flag(k)} {a!r} -> {b!r}" for k, (a, b) in changes.items())
    session.resume_message = f"resuming from {path} at iteration {start}" + (f"; changed: {changed}" if changed else "")
    return start


def train_loop(session, out, start, resumed, signals, references):
    cfg, state, device = session.cfg, session.state, session.device
    tb = TensorBoardLog(out / "tensorboard") if cfg.tensorboard else None
    log = RunLog(out / "log.jsonl", resume_iteration=start if resumed else None)
    if resumed:
        print(session.resume_message, file=sys.stderr)
    cfg.write_json(out / "config.json")  # `ganforge train --config out/config.json` repeats this run
    z_fixed, labels_fixed = fixed_latents(cfg, state.num_classes, device)
    if cfg.on_nan == "rollback" and not resumed:
        save_checkpoint(session, out, 0)  # something to roll back to before the first periodic checkpoint
    timer = IntervalTimer(device)
    nan_at = int(os.environ["GANFORGE_TEST_NAN_AT"]) if "GANFORGE_TEST_NAN_AT" in os.environ else None
    tracker = FIDTracker(cfg, references, device) if cfg.fid_every else None
    bar = tqdm(total=cfg.iterations, initial=start, disable=not cfg.progress, desc="train", unit="it",
               dynamic_ncols=True)
    iteration, logged_at = start, start
    try:
        while iteration < cfg.iterations:
            run_iteration(session, iteration)
            inject_fault_for_tests(state, iteration, session.rollbacks, nan_at)
            iteration += 1
            timer.add_images(cfg.batch_size)
            bar.update(1)
            stopping = signals.received is not None
            if iteration % cfg.log_every == 0 or iteration == cfg.iterations or stopping:
                record = {"iteration": iteration, **state.read_and_reset_stats(), **timer.lap()}
                bad_at = state.first_nonfinite_iteration(logged_at)
                logged_at = iteration
                log.append(record)
                if tb is not None:
                    tb.scalars(record)
                bar.set_postfix(d=f"{record['d_loss']:.3f}", g=f"{record['g_loss']:.3f}",
                                img_s=f"{record['images_per_sec']:.0f}")
                if bad_at is not None:
                    iteration = logged_at = handle_divergence(session, out, log, bad_at, record)
                    bar.reset(total=cfg.iterations)
                    bar.update(iteration)
                    continue
            fid_due = tracker is not None and tracker.due(iteration, timer.seconds)
            seconds_now = timer.so_far() if fid_due else None  # read before the side work pauses the clock
            with timer.side_work():
                if fid_due:
                    track_fid(session, out, log, tb, tracker, iteration, seconds_now)
                if iteration % cfg.sample_every == 0:
                    write_samples(session, z_fixed, labels_fixed, out / f"samples_{iteration:06d}.png", tb, iteration)
                if iteration % cfg.ckpt_every == 0 or stopping:
                    bad_at = state.first_nonfinite_iteration(logged_at)  # never write a non-finite checkpoint
                    if bad_at is not None:
                        iteration = logged_at = handle_divergence(session, out, log, bad_at, None)
                        continue
                    save_checkpoint(session, out, iteration)
            if stopping:
                name = signal.Signals(signals.received).name
                write_summary(session, out, timer, iteration, {"status": "interrupted", "signal": name})
                raise TrainingInterrupted(f"stopped by {name} at iteration {iteration}; checkpoint written; "
                                          f"continue with --resume {out}", signals.received)
    except TrainingDiverged as diverged:
        write_summary(session, out, timer, iteration, {"status": "diverged", "diverged_at": diverged.iteration})
        raise
    finally:
        bar.close()
        log.close()

    save_checkpoint(session, out, cfg.iterations)
    write_samples(session, z_fixed, labels_fixed, out / "samples_final.png", tb, cfg.iterations)
    losses = [r for r in log.records if "d_loss" in r]  # not the FID points of --fid-every
    if losses:
        save_loss_curve(losses, out / "loss_curve.png")
    scores = evaluate_generator(state.sampling_generator(), cfg, state.num_classes, device, cfg.fid_samples,
                                progress=cfg.progress, references=references)
    tracked = {}
    if tracker is not None and tracker.points:
        tracked = tracker.summary()
        save_fid_curve(tracker.points, out / "fid_curve.png", scores.get("fid_real_floor"))
    summary = write_summary(session, out, timer, cfg.iterations, {"status": "finished", **scores, **tracked})
    if tb is not None:
        tb.scalars({"iteration": cfg.iterations, "fid": summary["fid"], "fid_real_floor": summary["fid_real_floor"]},
                   prefix="eval")
        tb.close()
    return summary


def track_fid(session, out, log, tb, tracker, iteration, seconds):
    """--fid-every: score the sampling generator, log the point, and keep checkpoint-best.pt at the best FID."""
    state = session.state
    point, best = tracker.score(state.sampling_generator(), iteration, seconds)
    log.append({"iteration": iteration, "fid_during_training": point["fid"], "fid_train_seconds": seconds})
    if tb is not None:
        tb.scalars({"iteration": iteration, "fid": point["fid"]}, prefix="eval_during_training")
    if best and state.first_nonfinite_iteration(0) is None:
        ckpt.save_checkpoint(out / "checkpoint-best.pt", state, iteration, session.dataset.data_shape,
                             state.num_classes, extra={"rollbacks": session.rollbacks, "fid": point["fid"]})


def save_checkpoint(session, out, iteration):
    """Checkpoint into the run folder, keeping the newest --keep-checkpoints. Hook for FID tracked during
    training: pass the best-FID checkpoint's path as ``protect`` so pruning keeps it."""
    state = session.state
    return ckpt.save_run_checkpoint(out, state, iteration, session.dataset.data_shape, state.num_classes,
                                    keep=session.cfg.keep_checkpoints, protect=(),
                                    extra={"rollbacks": session.rollbacks})


def handle_divergence(session, out, log, bad_at, record):
    """--on-nan stop: raise, leaving the last good checkpoint. rollback: restore the newest checkpoint with
    the learning rates halved; returns the iteration training continues from."""
    cfg, state = session.cfg, session.state
    losses = "" if record is None else f" (d_loss {record['d_loss']}, g_loss {record['g_loss']})"
    where = f"training diverged: non-finite loss or weights at iteration {bad_at}{losses}"
    newest = ckpt.numbered_checkpoints(out)
    if cfg.on_nan == "stop" or session.rollbacks >= cfg.max_rollbacks or not newest:
        last = f"the last good checkpoint is {newest[0]}" if newest else "no checkpoint was written"
        tried = f" after {session.rollbacks} rollbacks" if session.rollbacks else ""
        raise TrainingDiverged(f"{where}{tried}; {last}. Try lower learning rates or --on-nan rollback",
                               bad_at)
    path, saved, _ = ckpt.find_resume_checkpoint(out, session.device)
    lr_g, lr_d = (group["lr"] for group in (state.opt_g.param_groups[0], state.opt_d.param_groups[0]))
    ckpt.restore_training_state(state, saved, path)
    if session.graphs:  # the restored optimizer state is new tensors: capture the steps again over them
        from .graphs import GraphRunner
        session.runner = GraphRunner(state)
    session.rollbacks += 1
    lr_g, lr_d = float(lr_g) / 2, float(lr_d) / 2
    state.set_learning_rates(lr_g=lr_g, lr_d=lr_d)
    state.read_and_reset_stats()
    state.reset_divergence_flag()
    log.rewind(saved["iteration"])
    print(f"{where}; rolled back to {path} (iteration {saved['iteration']}) with learning rates halved to "
          f"lr_g {lr_g:g}, lr_d {lr_d:g} (rollback {session.rollbacks} of at most {cfg.max_rollbacks})",
          file=sys.stderr)
    return saved["iteration"]


def write_summary(session, out, timer, iteration, fields):
    cfg = session.cfg
    summary = {
        **fields,
        "iterations": iteration,
        "images_per_sec": timer.images / timer.seconds if timer.seconds > 0 else None,
        "train_seconds": timer.seconds,
        "device": torch.cuda.get_device_name(session.device) if session.device.type == "cuda" else "cpu",
        "precision": session.precision,
        "graphs": session.graphs,
        "penalty_grad": session.state.penalty_grad,  # the input gradient the penalty used: explicit, autograd or None
        "kernels": kernels.resolve_impl(cfg.kernels, session.state.images),  # what "auto" became here
        "torch": torch.__version__,
        "rollbacks": session.rollbacks,
        **session.resume_note,
        "config": cfg.to_dict(),
    }
    atomic_write_json(out / "summary.json", summary)
    return json.loads(strict_json(summary))  # what the file holds: NaN became null


class IntervalTimer:
    """Training time per log interval, excluding side work (samples, checkpoints) and waiting for the device."""

    def __init__(self, device):
        self.device = device
        self.seconds, self.images = 0.0, 0
        self._start, self._images, self._side = time.perf_counter(), 0, 0.0

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # queued steps finish inside the timed interval, not the side work

    def add_images(self, n):
        self._images += n

    @contextmanager
    def side_work(self):
        self._sync()
        side_start = time.perf_counter()
        yield
        self._side += time.perf_counter() - side_start

    def so_far(self):
        """Training seconds up to now, the open interval included (outside side work)."""
        self._sync()
        return self.seconds + time.perf_counter() - self._start - self._side

    def lap(self):
        """images/s of the interval since the last lap, and training seconds so far."""
        self._sync()
        elapsed = time.perf_counter() - self._start - self._side
        self.seconds += elapsed
        self.images += self._images
        record = {"images_per_sec": self._images / elapsed if elapsed > 0 else None, "seconds": self.seconds}
        self._start, self._images, self._side = time.perf_counter(), 0, 0.0
        return record
