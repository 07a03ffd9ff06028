"""One training run's working parts, assembled: the resolved settings, the data on the device, G and D in their
train state, and the runner that calls the steps; and one iteration run over them."""
import os
from dataclasses import dataclass, field

import torch

from ..models import build_models, set_attribute_bank

from . import distributed
from .config import TrainConfig
from .data import DataError, Dataset, attribute_names_for, attribute_vectors, load_dataset, require_labels
from .data.identity import data_identity
from .data.stream import BatchStream, StreamedDataset, open_streamed_npy
from .devices import check_fits_on_device, resident_budget, resolve_device, resolve_graphs, resolve_precision
from .train_state import TrainState


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
    history: dict = field(default_factory=dict)  # a resumed run's figures so far: training time, FID curve
    resume_note: dict = field(default_factory=dict)  # where a resumed run came from and what it changed
    resume_message: str = ""
    stream: BatchStream | None = None  # a streamed dataset's batches (--stream); None: the data reside on the device

    def feed_real_batch(self, iteration, read):
        """Streaming: copy the batch of this iteration's ``read``-th real-batch read into the steps' input buffer.
        Batch numbers follow from the iteration alone, so a resume or rollback reads what the first pass read. The
        seed is the run's as it is now: a resume replaces an asked --seed by its checkpoint's after the stream is made."""
        reads = self.cfg.n_critic + int(self.state.g_step_reads_real)
        self.stream.fill(self.state.pixels, iteration * reads + read, seed=self.cfg.seed)

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
    state.data_identity = data_identity(dataset, streaming)  # saved in checkpoints: a resume reports other data
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
