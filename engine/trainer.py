"""The training loop: build a session (data, models, train state, runner), iterate, log, sample, checkpoint, score."""
import json
import os
import shutil
import signal
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from .. import kernels
from ..models import build_models, draw_attributes, set_attribute_bank

from . import checkpoint as ckpt
from . import distributed
from .config import TrainConfig
from .data import DataError, Dataset, attribute_names_for, attribute_vectors, load_dataset, require_labels
from .data.stream import BatchStream, StreamedDataset, open_streamed_npy
from .metrics.evaluate import FIDTracker, check_scoring, evaluate_generator
from .images import save_fid_curve, save_loss_curve, save_samples
from .io import atomic_write_json, strict_json
from .provenance import provenance
from .rundir import RunDir
from .runlog import DiscardLog, RunLog
from .sampling import run_generator
from .signals import SignalGuard
from .tensorboard import TensorBoardLog
from .steps import TrainState

SAMPLE_GRID = 64  # images in each sample grid written during training


@dataclass
class Session:
    """Everything one training run holds: resolved settings, data on the device, the train state and its runner."""
    cfg: TrainConfig
    graphs: bool
    dataset: Dataset
    state: TrainState
    runner: object  # EagerRunner or engine.graphs.GraphRunner: d_step(penalize), g_step()
    world: distributed.World = field(default_factory=distributed.World)  # this process among torchrun's ranks
    rollbacks: int = 0  # --on-nan rollback: how many so far (carried in checkpoints)
    resume_note: dict = field(default_factory=dict)  # where a resumed run came from and what it changed
    resume_message: str = ""
    stream: BatchStream | None = None  # a streamed dataset's batches (--stream); None: the data reside on the device

    def feed_real_batch(self, iteration, read):
        """Streaming: copy the batch of this iteration's ``read``-th real-batch read into the steps' input buffer.
        Batch numbers follow from the iteration alone, so a resume or rollback reads what the first pass read."""
        reads = self.cfg.n_critic + int(self.state.g_step_reads_real)
        self.stream.fill(self.state.pixels, iteration * reads + read)

    # The train state holds what the steps run with; the session reads it from there.
    @property
    def device(self):
        return self.state.device

    @property
    def precision(self):
        return self.state.precision


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


def cpu_bf16_units():
    """The CPU's native bf16 units as torch itself reports them (AMX tiles, AVX512-BF16), e.g. ["AMX", ...]."""
    probes = {"AMX": "_is_amx_tile_supported", "AVX512-BF16": "_is_avx512_bf16_supported"}
    return [name for name, probe in probes.items() if getattr(torch.cpu, probe, lambda: False)()]


def resolve_precision(precision, device):
    """auto: bf16 on CUDA, and on a CPU with AMX tiles (bf16 matrix units); fp32 on other CPUs, or on any CPU when
    the environment sets GANFORGE_CPU_AUTO_PRECISION=fp32 (the test suite does: its interpreted Triton kernels are
    slow in bf16, and its results must not depend on the CPU that runs it). On AMX bf16 autocast trains the default
    MLP faster than fp32 from batch 256 up (bench/results/speedrun-search-cpu-2026-12-02/; about even at batch
    64: precision-cpu-2026-12-01/), which the default recipe's batch was chosen for; a CPU without them would
    emulate bf16, slower than fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16"
    forced = os.environ.get("GANFORGE_CPU_AUTO_PRECISION")
    if forced is not None:
        if forced not in ("fp32", "bf16"):
            raise ValueError(f"GANFORGE_CPU_AUTO_PRECISION must be fp32 or bf16, got {forced!r}")
        return forced
    return "bf16" if "AMX" in cpu_bf16_units() else "fp32"


def resolve_graphs(graphs, device):
    if graphs == "on" and device.type != "cuda":
        raise ValueError("--graphs on needs a CUDA device (CUDA graphs capture GPU work); "
                         f"this run is on {device.type}: use --graphs off")
    return graphs == "on" or (graphs == "auto" and device.type == "cuda")


def host_memory_available():
    """Bytes of host memory available to a new allocation (Linux's MemAvailable; elsewhere all physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def resident_budget(cfg, device):
    """Bytes resident data may take: --data-memory, else half the available host memory (and on CUDA at most half
    the device's free memory)."""
    if cfg.data_memory is not None:
        return cfg.data_memory * 2**30
    budget = 0.5 * host_memory_available()
    if device.type == "cuda":
        budget = min(budget, 0.5 * torch.cuda.mem_get_info(device)[0])
    return budget


def streamed_dataset(cfg, device):
    """The StreamedDataset this run reads from disk, or None when the data are loaded and held (--stream)."""
    if cfg.stream == "off":
        return None
    streamable = cfg.dataset == "npy" and str(cfg.data_path or "").endswith(".npy")
    if cfg.stream == "on" and not streamable:
        raise ValueError(f"--stream on reads a uint8 .npy array from disk (--dataset npy --data-path FILE.npy); "
                         f"dataset {cfg.dataset!r} is loaded into memory: use --stream off or auto")
    if not streamable or not os.path.isfile(cfg.data_path):
        return None  # a missing file: load_dataset's message names it
    try:
        data = open_streamed_npy(cfg.data_path, cfg.image_size, cfg.channels)
    except DataError:
        if cfg.stream == "on":
            raise
        return None  # auto: an array that cannot be streamed as stored (floats, a resize) is loaded as before
    if cfg.stream == "on" or len(data) * data.image_bytes > resident_budget(cfg, device):
        return data
    return None


def check_streamable(cfg, dataset):
    if cfg.conditional or cfg.condition_on:
        raise ValueError(f"a streamed .npy array ({dataset.path}) has no labels: train an unconditional model, or "
                         "load an .npz of images and labels resident (--stream off)")
    if cfg.fid_samples > 0:
        raise ValueError(f"FID compares with real images held in memory; the streamed {dataset.path} is not scored "
                         "yet: pass --fid-samples 0 (or train resident with --stream off)")


def check_fits_on_device(dataset, device, share=0.5, rows=None):
    """The steps gather batches from a device-resident dataset (``rows`` of it: a rank's shard); refuse one that
    would crowd out the models."""
    if device.type != "cuda":
        return
    rows = len(dataset) if rows is None else rows
    needed = dataset.pixels[:1].numel() * dataset.pixels.element_size() * rows  # uint8 pixels: 1 byte each
    free, _ = torch.cuda.mem_get_info(device)
    if needed > share * free:
        raise ValueError(f"dataset {dataset.name!r} needs {needed / 2**30:.1f} GiB on the device but only "
                         f"{free / 2**30:.1f} GiB are free (at most half is used for data): use a smaller "
                         "--image-size or a subset of the data")


def build_session(cfg, dataset=None, world=None):
    """Validate the config, load the data onto the device, build G and D, their train state and the runner.

    world: under torchrun, this process's place (engine.distributed.World, its process group started); the
    session then holds this rank's shard of the data and its part of the batch."""
    world = world or distributed.World()
    cfg.validate()
    world.local_batch(cfg.batch_size)  # the global batch must split evenly
    return assemble_session(cfg, dataset, world)


def assemble_session(cfg, dataset, world):
    """build_session after its checks (train makes them earlier, before it locks the run folder): data on the
    device, G and D, their train state and runner."""
    device = world.device(resolve_device(cfg.device))
    precision = resolve_precision(cfg.precision, device)
    graphs = resolve_graphs(cfg.graphs, device)
    torch.manual_seed(cfg.seed)
    if dataset is None:
        dataset = streamed_dataset(cfg, device) or load_dataset(
            cfg.dataset, cfg.data_path, split="train", image_size=cfg.image_size, channels=cfg.channels, seed=cfg.seed)
    streaming = isinstance(dataset, StreamedDataset)
    if streaming:
        check_streamable(cfg, dataset)
    if cfg.conditional:
        require_labels(dataset)
    if cfg.batch_size > len(dataset):
        raise ValueError(f"--batch-size {cfg.batch_size} is larger than the dataset ({len(dataset)} samples)")
    if cfg.augment != "none" and len(dataset.data_shape) != 3:
        raise ValueError(f"--augment applies to images; dataset {dataset.name!r} is {dataset.data_shape} points")
    num_classes = dataset.num_classes if cfg.conditional else 0
    # --condition-on: the attribute vectors (-1/1 floats) take the labels' place in the batches
    attribute_names = attribute_names_for(cfg.condition_on, dataset) if cfg.condition_on else ()
    conditions = attribute_vectors(dataset, attribute_names) if attribute_names else dataset.labels
    # BatchNorm mixes samples, which a per-sample gradient penalty must not see: D has none then; nor with spectral
    # norm, which takes its place as D's normalisation (Miyato et al.'s critics have no BatchNorm).
    G, D = build_models(cfg.model, dataset.data_shape, cfg.z_dim, num_classes, cfg.width,
                        d_batch_norm=cfg.penalty == "none" and not cfg.spectral_norm, impl=cfg.kernels,
                        spectral_norm=cfg.spectral_norm, backbone=cfg.vae_backbone, attribute_names=attribute_names)
    if attribute_names:  # from the whole set, seeded: the same bank on every rank
        set_attribute_bank(G, conditions, cfg.seed)
    is_conv = cfg.architecture == "dcgan"
    channels_last = is_conv and (cfg.channels_last == "on" or (cfg.channels_last == "auto" and device.type == "cuda"))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if cfg.sync_bn and world.world_size > 1:
        distributed.synchronize_batch_norm(G)
        distributed.synchronize_batch_norm(D)
    G, D = G.to(device, memory_format=memory_format), D.to(device, memory_format=memory_format)
    world.broadcast_modules_(G, D)  # every rank starts from rank 0's weights
    # This process's data: all of it, or under torchrun its rank's shard. It resides on the device as the dataset
    # holds it (uint8 pixels for integer sources); steps gather batches there and convert them to floats. A
    # streamed dataset stays on disk: the device holds one batch, the steps' static input, refilled before each
    # step that reads it.
    rows = distributed.shard_indices(len(dataset), world.rank, world.world_size, cfg.seed)
    stream, labels = None, None
    if streaming:
        pixels = torch.empty((world.local_batch(cfg.batch_size), *dataset.data_shape), dtype=torch.uint8,
                             device=device)
        stream = BatchStream(dataset, cfg.seed, rows.numpy(), cfg.batch_size, world.rows(cfg.batch_size), device,
                             cfg.data_workers)
    else:
        check_fits_on_device(dataset, device, rows=len(rows))
        pixels = dataset.pixels[rows].to(device) if world.world_size > 1 else dataset.pixels.to(device)
        if conditions is not None:
            labels = conditions[rows].to(device) if world.world_size > 1 else conditions.to(device)
    state = TrainState(cfg, G, D, pixels, labels, num_classes, device, precision, channels_last, world,
                       streamed=streaming)
    if graphs:
        from .graphs import GraphRunner
        runner = GraphRunner(state)
    else:
        runner = EagerRunner(state)
    return Session(cfg, graphs, dataset, state, runner, world=world, stream=stream)


def run_iteration(session, iteration):
    """One training iteration: n_critic D steps (the penalty on its lazy interval), then one G step."""
    penalized = session.cfg.penalized_d_steps(iteration)
    for read, penalize in enumerate(penalized):
        if session.stream is not None:
            session.feed_real_batch(iteration, read)
        session.runner.d_step(penalize)
    if session.stream is not None and session.state.g_step_reads_real:
        session.feed_real_batch(iteration, len(penalized))
    session.runner.g_step()


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


class TrainingStopped(Exception):
    """The run stopped early but cleanly (its outputs are consistent); ``exit_code`` is the command's."""
    exit_code = 1


class TrainingDiverged(TrainingStopped):
    def __init__(self, message, iteration):
        super().__init__(message)
        self.iteration = iteration


class RanksLost(TrainingStopped):
    """Under torchrun, the other ranks are gone: the process group is broken, so the process should exit at once
    (``hard_exit``) rather than wait for it to shut down."""
    hard_exit = True


class TrainingFailed(TrainingStopped):
    """An I/O failure during the run (a full disk, no permission, a vanished folder): the newest checkpoint stays
    whole, summary.json says "failed" where it could still be written."""


class TrainingInterrupted(TrainingStopped):
    def __init__(self, message, signum):
        super().__init__(message)
        self.exit_code = 128 + signum


class FaultAfter:
    """Test hook around a runner: GANFORGE_TEST_NAN_AT=N poisons one D weight with NaN once the run has completed
    iteration N, once per run, so the divergence guard and rollback are tested on a real non-finite weight. It
    counts G steps (one per iteration) and lives outside the loop; a rollback's new runner does not carry it."""

    def __init__(self, runner, state, start, nan_at):
        self.runner, self.state, self.iteration, self.nan_at = runner, state, start, nan_at

    def d_step(self, penalize):
        return self.runner.d_step(penalize)

    def g_step(self):
        out = self.runner.g_step()
        self.iteration += 1
        if self.iteration == self.nan_at:
            with torch.no_grad():
                next(self.state.D.parameters()).view(-1)[0] = float("nan")
        return out


def train(cfg, dataset=None, resume=None, overwrite=False, discard_newer=False):
    """Train per ``cfg``; write samples, log, checkpoints, loss curve and summary.json into cfg.out.

    resume: a checkpoint file or a run folder (its newest loadable checkpoint) to continue from.
    overwrite: replace a finished or started run in cfg.out instead of refusing.
    discard_newer: resuming into its own folder from a checkpoint older than the folder's newest, move the newer
    checkpoints and the log aside (into OUT/abandoned-NNNNNN/) instead of refusing.
    """
    cfg.validate()
    out = Path(cfg.out)
    resuming_here = bool(resume) and out.resolve() == resume_folder(resume)
    # Under torchrun: join the other ranks first (rank 0 alone touches the run folder and writes outputs).
    world = distributed.from_environment(cfg.dist_timeout)
    world.local_batch(cfg.batch_size)  # the global batch must split evenly
    world.start(world.device(resolve_device(cfg.device)))
    # The folder is locked first, so a second run into it fails at once; nothing in it changes before training.
    with ExitStack() as stack, SignalGuard() as signals:
        run_dir = world.main_does(lambda: stack.enter_context(RunDir(out).open(resume=resuming_here,
                                                                               overwrite=overwrite)))
        session = assemble_session(cfg, dataset, world)  # the config was checked above
        if session.stream is not None:
            stack.callback(session.stream.close)  # the data workers stop with the run, however it ends
        references = check_scoring(cfg)  # FID's backbone and held-out split fail here, not after training
        start = restore(session, resume, out if resuming_here else None, discard_newer) if resume else 0
        if "GANFORGE_TEST_NAN_AT" in os.environ:
            session.runner = FaultAfter(session.runner, session.state, start, int(os.environ["GANFORGE_TEST_NAN_AT"]))
        if run_dir is not None:
            run_dir.clear_previous_run()
        try:
            summary = train_loop(session, out, start, resume is not None, signals, references)
        except OSError as exc:  # a full disk, a folder made read-only or removed: one line, the checkpoints intact
            raise TrainingFailed(f"{describe_os_error(exc)}; the last good checkpoint is "
                                 f"{newest_checkpoint(out)}; free the space or fix the folder, then continue with "
                                 f"--resume {out}") from exc
        except RuntimeError as exc:
            if not (world.launched and distributed.is_collective_failure(exc)):
                raise
            lost = exc if isinstance(exc, distributed.RankLost) else world.lost(exc)
            raise RanksLost(f"{lost}; the checkpoints in {out} are intact: continue with --resume {out}") from exc
    world.stop()
    return summary


def resume_folder(resume):
    """The run folder a --resume path belongs to: the folder itself, or a checkpoint file's folder."""
    path = Path(resume).resolve()
    return path if path.is_dir() else path.parent


def describe_os_error(exc):
    where = f"{exc.filename}: " if exc.filename else ""
    return f"cannot write the run's files: {where}{exc.strerror or exc}"


def newest_checkpoint(out):
    found = ckpt.numbered_checkpoints(out) if Path(out).is_dir() else []
    return found[0] if found else "none (no checkpoint was written)"


def load_resume_state(session, source):
    """(path, checkpoint, skipped) of the checkpoint to resume from: read by rank 0 (the only rank sure to see the
    run folder) and sent to the others under torchrun."""
    return session.world.main_does(lambda: ckpt.find_resume_checkpoint(source, "cpu"), share=True)


def restore(session, resume, run_folder=None, discard_newer=False):
    """Load the checkpoint to resume from into the session; returns its iteration.

    run_folder: set when resuming into the checkpoint's own folder. Unloadable checkpoints skipped there are moved
    aside (NAME.unloadable), so they neither count toward --keep-checkpoints nor get picked again; checkpoints
    newer than the one resumed from are refused (another history would be mixed in) unless ``discard_newer``
    moves them aside; and a run whose training is complete (its iteration equals --iterations) is finished: the
    final evaluation and summary are written, nothing is trained."""
    cfg, main = session.cfg, session.world.is_main
    path, state, skipped = load_resume_state(session, resume)
    for bad, reason in skipped if main else ():
        moved = ""
        if run_folder is not None:
            bad.rename(bad.with_name(bad.name + ".unloadable"))
            moved = f"; moved to {bad.name}.unloadable"
        print(f"skipping {bad}: {reason}{moved}", file=sys.stderr)
    if run_folder is not None:
        newer = [p for p in ckpt.numbered_checkpoints(run_folder) if ckpt.checkpoint_number(p) > state["iteration"]]
        if newer and not discard_newer:
            names = ", ".join(p.name for p in newer[:3]) + (" ..." if len(newer) > 3 else "")
            raise ValueError(f"{run_folder} holds checkpoints newer than {path} ({names}): resuming from it would "
                             f"mix two histories in one folder; resume from {run_folder} itself, or pass "
                             "--discard-newer to move the newer checkpoints and the log into "
                             f"{run_folder}/abandoned-{state['iteration']:06d}/")
        if newer and main:
            abandon(run_folder, newer, state["iteration"])
    saved_seed = state["config"].get("seed", cfg.seed)
    seed_note = {}
    if saved_seed != cfg.seed:  # the random streams continue from the checkpoint: record what is used
        seed_note = {"--seed": {"was": saved_seed, "now": saved_seed, "asked": cfg.seed,
                                "ignored": "the random streams continue from the checkpoint"}}
        cfg.seed = saved_seed
    start, changes = ckpt.restore_training_state(session.state, state, path)  # the architecture checked first
    finishing = run_folder is not None and start == cfg.iterations
    if start >= cfg.iterations and not finishing:
        raise ValueError(f"--iterations {cfg.iterations} is not above the iteration of {path} "
                         f"({start}): nothing left to train; ask for more iterations")
    session.rollbacks = state.get("rollbacks", 0)
    session.resume_note = {"resumed_from": str(path), "resumed_at": start,
                           "changes": {**{ckpt.flag(k): {"was": a, "now": b} for k, (a, b) in changes.items()},
                                       **seed_note}}
    changed = ", ".join(f"{ckpt.flag(k)} {a!r} -> {b!r}" for k, (a, b) in changes.items())
    if seed_note:
        changed += (", " if changed else "") + f"--seed {seed_note['--seed']['asked']} ignored (continuing seed " \
                                               f"{saved_seed}'s random streams)"
    session.resume_message = f"resuming from {path} at iteration {start}" + (f"; changed: {changed}" if changed else "")
    if finishing:
        session.resume_message += "; training is complete: finishing the evaluation and summary"
    return start


def abandon(run_folder, newer, iteration):
    """--discard-newer: the abandoned history's checkpoints and log go into run_folder/abandoned-NNNNNN/."""
    aside = Path(run_folder) / f"abandoned-{iteration:06d}"
    aside.mkdir(exist_ok=True)
    for path in newer:
        path.rename(aside / path.name)
    for name in ("log.jsonl", "summary.json"):
        if (Path(run_folder) / name).is_file():
            shutil.copy2(Path(run_folder) / name, aside / name)  # the folder's own copy is cut back on resume
    print(f"moved {len(newer)} newer checkpoint(s) and the log into {aside}", file=sys.stderr)


def train_loop(session, out, start, resumed, signals, references):
    """Train from iteration ``start`` to the end, then finish the run (final checkpoint, samples, FID, summary)."""
    loop = TrainLoop(session, out, start, resumed, signals, references)
    try:
        with loop:
            loop.run(session.cfg.iterations)
        return loop.finish()
    except OSError as exc:
        loop.record_failure(exc)
        raise


class TrainLoop:
    """One run's loop: ``run`` iterates and does what falls due (a log record, samples, a checkpoint, an FID
    point, a signal's stop); ``finish`` writes the final outputs.

    Between two log records the host only queues steps and reads nothing back from the device: the log record is
    the one place the clock is read (one device sync and two host reads), and side work is entered only on the
    iterations it is due. ``bench.train_bench`` times ``run`` itself, so its figures are the user's."""

    def __init__(self, session, out, start, resumed, signals, references, progress_file=None):
        cfg, world = session.cfg, session.world
        self.session, self.out, self.signals, self.references = session, out, signals, references
        self.main = world.is_main  # under torchrun, rank 0 alone writes the log, samples, checkpoints and summary
        self.tb = TensorBoardLog(out / "tensorboard") if cfg.tensorboard and self.main else None
        self.log = RunLog(out / "log.jsonl", resume_iteration=start if resumed else None) if self.main \
            else DiscardLog()
        if resumed and self.main:
            print(session.resume_message, file=sys.stderr)
        if self.main:
            cfg.write_json(out / "config.json")  # `ganforge train --config out/config.json` repeats this run
        self.z_fixed, self.labels_fixed = fixed_latents(cfg, session.state.G, session.device)
        self.iteration = self.logged_at = start
        self.checkpointed_at = start if resumed else None  # a resumed run's checkpoint at ``start`` exists
        if cfg.on_nan == "rollback" and not resumed:
            self.save_checkpoint()  # something to roll back to before the first periodic checkpoint
        self.timer = IntervalTimer(session.device)
        self.tracker = FIDTracker(cfg, references, session.device, world) if cfg.fid_every else None
        self.bar = tqdm(total=cfg.iterations, initial=start, disable=not (cfg.progress and self.main), desc="train",
                        unit="it", dynamic_ncols=True, file=progress_file)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()
        self.log.close()
        return False

    def run(self, until):
        """Train up to iteration ``until``."""
        cfg = self.session.cfg
        while self.iteration < until:
            run_iteration(self.session, self.iteration)
            self.iteration += 1
            self.timer.add_images(cfg.batch_size)
            self.bar.update(1)
            received = stop_signal(self.session, self.signals, self.iteration)
            if self.iteration % cfg.log_every == 0 or self.iteration == cfg.iterations or received is not None:
                if not self.on_log():
                    continue  # rolled back: the loop goes on from the restored iteration
            if self.side_work_due(received):
                with self.timer.side_work():
                    if not self.on_side_work(received):
                        continue

    def side_work_due(self, received):
        cfg, i = self.session.cfg, self.iteration
        return received is not None or i % cfg.ckpt_every == 0 or (i % cfg.sample_every == 0 and self.main) or \
            (self.tracker is not None and i % cfg.fid_every == 0)

    def on_log(self):
        """One log record: the interval's mean statistics and images/s. False when the run rolled back."""
        record = {"iteration": self.iteration, **self.session.state.read_and_reset_stats(), **self.timer.lap()}
        stream = self.session.stream
        if stream is not None:  # how long the loop waited for the disk: a large share means the run is input-bound
            waited = stream.read_and_reset_wait()
            record["input_wait_seconds"] = round(waited, 3)
            interval = self.timer.interval_seconds
            record["input_wait_share"] = round(waited / interval, 3) if interval > 0 else None
        self.log.append(record)
        if self.tb is not None:
            self.tb.scalars(record)
        self.bar.set_postfix(d=f"{record['d_loss']:.3f}", g=f"{record['g_loss']:.3f}",
                             img_s=f"{record['images_per_sec']:.0f}")
        return self.check_finite(record)

    def on_side_work(self, received):
        """Whatever falls due at this iteration: an FID point, a sample grid, a checkpoint, the stop on a signal.
        False when the run rolled back."""
        cfg, i = self.session.cfg, self.iteration
        if self.tracker is not None and i % cfg.fid_every == 0:
            if self.session.world.from_main(self.tracker.due(i, self.timer.seconds)):  # rank 0's clock decides
                track_fid(self.session, self.out, self.log, self.tb, self.tracker, i, self.timer.side_work_began)
        if i % cfg.sample_every == 0 and self.main:
            write_samples(self.session, self.z_fixed, self.labels_fixed, self.out / f"samples_{i:06d}.png", self.tb, i)
        if i % cfg.ckpt_every == 0 or received is not None:
            if not self.check_finite(None):  # never write a non-finite checkpoint
                return False
            self.save_checkpoint()
        if received is not None:
            name = signal.Signals(received).name
            self.write_summary({"status": "interrupted", "signal": name})
            raise TrainingInterrupted(f"stopped by {name} at iteration {i}; checkpoint written; "
                                      f"continue with --resume {self.out}", received)
        return True

    def check_finite(self, record):
        """The one divergence path: when a loss or weight went non-finite since the last log record, stop (summary
        written, TrainingDiverged raised) or roll back (returns False; the loop continues from the restored
        iteration). True when all is finite."""
        bad_at = self.session.state.first_nonfinite_iteration(self.logged_at)
        if bad_at is None:
            self.logged_at = self.iteration if record is not None else self.logged_at
            return True
        try:
            self.iteration = self.logged_at = handle_divergence(self.session, self.out, self.log, bad_at, record)
        except TrainingDiverged as diverged:
            self.write_summary({"status": "diverged", "diverged_at": diverged.iteration})
            raise
        self.bar.reset(total=self.session.cfg.iterations)
        self.bar.update(self.iteration)
        return False

    def save_checkpoint(self):
        save_checkpoint(self.session, self.out, self.iteration)
        self.checkpointed_at = self.iteration

    def write_summary(self, fields):
        return write_summary(self.session, self.out, self.timer, self.iteration, fields)

    def record_failure(self, exc):
        """summary.json with status "failed" and the cause, if the folder still takes a write."""
        try:
            self.write_summary({"status": "failed", "error": describe_os_error(exc)})
        except OSError:
            pass  # the disk that failed the run may fail this too; the one-line message still says why

    def stop_if_signalled(self):
        """A signal during the final outputs: the checkpoint is already written; stop with the signal's code."""
        received = self.signals.received
        if self.session.world.launched:  # every rank stops, or none: they agree (a collective)
            received = self.session.world.max(received or 0) or None
        if received is not None:
            name = signal.Signals(received).name
            self.write_summary({"status": "interrupted", "signal": name})
            raise TrainingInterrupted(f"stopped by {name} during the final evaluation at iteration "
                                      f"{self.iteration}; checkpoint written; finish with --resume {self.out}",
                                      received)

    def finish(self):
        """The final checkpoint (unless the loop just wrote it), samples, loss curve, FID and summary.json."""
        session, cfg, out, state = self.session, self.session.cfg, self.out, self.session.state
        if self.checkpointed_at != cfg.iterations:
            self.save_checkpoint()
        self.stop_if_signalled()
        if self.main:
            write_samples(session, self.z_fixed, self.labels_fixed, out / "samples_final.png", self.tb, cfg.iterations)
        losses = [r for r in self.log.records if "d_loss" in r]  # not the FID points of --fid-every
        if losses:
            save_loss_curve(losses, out / "loss_curve.png")
        in_sync = {}
        if session.world.launched:  # G, D and the EMA must be the same on every rank; measured, not assumed
            # the EMA as it samples (rank 0 alone recomputed its BatchNorm statistics for samples and checkpoints)
            models = [state.G, state.D] + ([state.sampling_generator()] if state.G_ema is not None else [])
            in_sync = {"ranks_max_abs_difference": session.world.max_difference(*models)}
        started = time.perf_counter()
        scores = evaluate_generator(state.sampling_generator(), cfg, state.num_classes, session.device,
                                    cfg.fid_samples, progress=cfg.progress and self.main, references=self.references,
                                    world=session.world)
        scores["evaluation_seconds"] = round(time.perf_counter() - started, 3)  # the final scores' own cost
        self.stop_if_signalled()
        tracked = {}
        if self.tracker is not None and self.tracker.points:
            tracked = self.tracker.summary()
            if self.main:
                save_fid_curve(self.tracker.points, out / "fid_curve.png", scores.get("fid_real_floor"))
        summary = self.write_summary({"status": "finished", **scores, **tracked, **in_sync})
        if self.tb is not None:
            self.tb.scalars({"iteration": cfg.iterations, "fid": summary["fid"],
                             "fid_real_floor": summary["fid_real_floor"]}, prefix="eval")
            self.tb.close()
        return summary


def track_fid(session, out, log, tb, tracker, iteration, seconds):
    """--fid-every: score the sampling generator, log the point, and keep checkpoint-best.pt at the best FID."""
    state = session.state
    point, best = tracker.score(state.sampling_generator(), iteration, seconds)
    log.append({"iteration": iteration, "fid_during_training": point["fid"], "fid_train_seconds": seconds})
    if tb is not None:
        tb.scalars({"iteration": iteration, "fid": point["fid"]}, prefix="eval_during_training")
    if best and state.first_nonfinite_iteration(0) is None and session.world.is_main:
        ckpt.save_checkpoint(out / "checkpoint-best.pt", state, iteration, session.dataset.data_shape,
                             state.num_classes, extra={"rollbacks": session.rollbacks, "fid": point["fid"]})


def save_checkpoint(session, out, iteration):
    """Checkpoint into the run folder, keeping the newest --keep-checkpoints (rank 0 alone writes)."""
    state = session.state
    if not session.world.is_main:
        return None
    return ckpt.save_run_checkpoint(out, state, iteration, session.dataset.data_shape, state.num_classes,
                                    keep=session.cfg.keep_checkpoints,
                                    extra={"rollbacks": session.rollbacks, **world_fields(session)})


def handle_divergence(session, out, log, bad_at, record):
    """--on-nan stop: raise, leaving the last good checkpoint. rollback: restore the newest checkpoint with
    the learning rates halved; returns the iteration training continues from."""
    cfg, state = session.cfg, session.state
    losses = "" if record is None else f" (d_loss {record['d_loss']}, g_loss {record['g_loss']})"
    where = f"training diverged: non-finite loss or weights at iteration {bad_at}{losses}"
    newest = session.world.from_main(ckpt.numbered_checkpoints(out))  # rank 0 sees the run folder
    if cfg.on_nan == "stop" or session.rollbacks >= cfg.max_rollbacks or not newest:
        last = f"the last good checkpoint is {newest[0]}" if newest else "no checkpoint was written"
        tried = f" after {session.rollbacks} rollbacks" if session.rollbacks else ""
        raise TrainingDiverged(f"{where}{tried}; {last}. Try lower learning rates or --on-nan rollback",
                               bad_at)
    path, saved, _ = load_resume_state(session, out)
    lr_g, lr_d = (group["lr"] for group in (state.opt_g.param_groups[0], state.opt_d.param_groups[0]))
    ckpt.restore_training_state(state, saved, path)  # the same config: no changes to apply
    if session.graphs:  # the restored optimizer state is new tensors: capture the steps again over them
        from .graphs import GraphRunner
        session.runner = GraphRunner(state)
    session.rollbacks += 1
    lr_g, lr_d = float(lr_g) / 2, float(lr_d) / 2
    state.set_learning_rates(lr_g=lr_g, lr_d=lr_d)
    state.read_and_reset_stats()
    state.reset_divergence_flag()
    log.rewind(saved["iteration"])
    if session.world.is_main:
        print(f"{where}; rolled back to {path} (iteration {saved['iteration']}) with learning rates halved to "
              f"lr_g {lr_g:g}, lr_d {lr_d:g} (rollback {session.rollbacks} of at most {cfg.max_rollbacks})",
              file=sys.stderr)
    return saved["iteration"]


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


def stop_signal(session, signals, iteration):
    """The signal (SIGINT/SIGTERM) the run stops on, or None. Under torchrun the ranks agree at log intervals
    only (an agreement is a collective), so all of them stop after the same iteration."""
    if not session.world.launched:
        return signals.received
    if iteration % session.cfg.log_every != 0:
        return None
    return session.world.max(signals.received or 0) or None


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
        "data": "streamed" if session.stream is not None else "resident",
        **({"input_wait_seconds": round(session.stream.total_wait_seconds, 3),
            "input_wait_share": round(session.stream.total_wait_seconds / timer.seconds, 4) if timer.seconds > 0
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


class IntervalTimer:
    """Training time per log interval, excluding side work (samples, checkpoints, FID).

    The device is waited for only where a clock is read: at each log record (``lap``) and on entering side work,
    so queued steps finish inside the timed interval, not the side work. Between those points the host never
    waits, and on a GPU it runs ahead queueing steps."""

    def __init__(self, device):
        self.device = device
        self.seconds, self.images = 0.0, 0
        self.side_work_began = 0.0  # training seconds when the current (or last) side work began
        self.interval_seconds = 0.0  # training seconds of the last lap
        self._start, self._images, self._side = time.perf_counter(), 0, 0.0

    def sync(self):
        """Wait for the device's queued work (CPU work is synchronous: nothing to wait for)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def add_images(self, n):
        self._images += n

    @contextmanager
    def side_work(self):
        self.sync()
        side_start = time.perf_counter()
        self.side_work_began = self.seconds + side_start - self._start - self._side
        yield
        self._side += time.perf_counter() - side_start

    def lap(self):
        """images/s of the interval since the last lap, and training seconds so far."""
        self.sync()
        elapsed = time.perf_counter() - self._start - self._side
        self.seconds += elapsed
        self.images += self._images
        record = {"images_per_sec": self._images / elapsed if elapsed > 0 else None, "seconds": self.seconds}
        self.interval_seconds = elapsed
        self._start, self._images, self._side = time.perf_counter(), 0, 0.0
        return record
