"""Checkpoints: G, D, EMA, optimizers, loss scalers, iteration and RNG states in one file.

Written atomically (engine.io.atomic_write), so a crash mid-write never leaves a truncated checkpoint
behind; read with ``weights_only=True``, so loading never runs code from the file.
"""
import io
import os
import pickle
import uuid
import zipfile
from pathlib import Path

import torch

from .config import TrainConfig, fields_with_resume_class, flag
from .data.identity import data_changes
from .io import atomic_write, fsync_dir
from .rundir import STAGING

FORMAT = "ganforge-checkpoint/1"


def rng_state():
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack([s for s in torch.cuda.get_rng_state_all()])
    return state


def restore_rng_state(state):
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def save_checkpoint(path, train_state, iteration, data_shape, num_classes, extra=None):
    """Write everything needed to resume training (or to sample) at ``iteration``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT,
        "iteration": iteration,
        "config": train_state.cfg.to_dict(),
        "data_shape": list(data_shape),
        "num_classes": num_classes,
        "attribute_names": list(getattr(train_state.G, "attribute_names", ())),  # --condition-on, columns in order
        "G": train_state.G.state_dict(),
        "D": train_state.D.state_dict(),
        # the EMA with BatchNorm statistics of its own weights, as it samples
        "G_ema": train_state.sampling_generator().state_dict() if train_state.G_ema is not None else None,
        "opt_g": train_state.opt_g.state_dict(),
        "opt_d": train_state.opt_d.state_dict(),
        "scaler_g": train_state.scaler_g.state_dict(),
        "scaler_d": train_state.scaler_d.state_dict(),
        "rng": rng_state(),
        # device-side training counters: the adaptive augmentation strength and the EMA ramp-up's image count
        "augment_p": train_state.augment.p.detach().cpu(),
        "ema_images": train_state.ema_images.detach().cpu(),
        "lecam_ema": train_state.lecam_ema.detach().cpu(),  # LeCam's moving averages of D's scores
        "data": train_state.data_identity,  # what the steps read (engine.data.identity): a resume compares
        **(extra or {}),  # e.g. the trainer's rollback count
    }
    # Serialised in memory first: torch's own writer turns a failed write (a full disk) into an opaque
    # RuntimeError; written as bytes, the failure is an OSError naming the file and its cause.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write(path, lambda f: f.write(buffer.getbuffer()))


# -- a run folder's checkpoints: checkpoint-NNNNNN.pt, the last K kept, checkpoint.pt the newest -------------------
LATEST = "checkpoint.pt"


def numbered_path(folder, iteration):
    return Path(folder) / f"checkpoint-{iteration:06d}.pt"


def checkpoint_number(path):
    """The iteration in a checkpoint-NNNNNN.pt name."""
    return int(Path(path).stem.removeprefix("checkpoint-"))


def numbered_checkpoints(folder):
    """The folder's checkpoint-NNNNNN.pt files, newest (highest iteration) first."""
    found = []
    for path in Path(folder).glob("checkpoint-*.pt"):
        number = path.stem.removeprefix("checkpoint-")
        if number.isdigit():
            found.append((int(number), path))
    return [path for _, path in sorted(found, reverse=True)]


def save_run_checkpoint(folder, train_state, iteration, data_shape, num_classes, keep, extra=None):
    """Write checkpoint-NNNNNN.pt, point checkpoint.pt at it, and delete numbered ones beyond the newest ``keep``.

    checkpoint.pt is a hard link to the newest numbered file (a copy where links are not supported), swapped in
    by an atomic rename, so readers always find a whole file. It is published first: the file is written whole
    into FOLDER/.staging/, checkpoint.pt is linked to it, and only then is it renamed to checkpoint-NNNNNN.pt. So a
    kill never leaves checkpoint.pt behind the newest numbered file; a kill between the two renames leaves it
    ahead, and a resume from the folder takes it (find_resume_checkpoint). checkpoint-best.pt (--fid-every) is not
    numbered, so pruning never touches it.
    """
    staged = save_checkpoint(numbered_path(Path(folder) / STAGING, iteration), train_state, iteration, data_shape,
                             num_classes, extra)
    _replace_with_link(staged, Path(folder) / LATEST)
    path = numbered_path(folder, iteration)
    os.replace(staged, path)
    try:
        staged.parent.rmdir()  # empty again: a run folder holds its own files only
    except OSError:
        pass  # left for the next run's cleanup (engine.rundir)
    fsync_dir(folder)
    for old in numbered_checkpoints(folder)[keep:]:
        old.unlink(missing_ok=True)
    return path


def _replace_with_link(source, target):
    """Make ``target`` a hard link to ``source`` by an atomic rename (a copy where links are unsupported)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # the atomic_write pattern
    try:
        os.link(source, tmp)
    except OSError:
        atomic_write(target, lambda f: f.write(Path(source).read_bytes()))
        return
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def point_latest_at(path):
    """Make the run folder's checkpoint.pt name ``path`` (a checkpoint-NNNNNN.pt in it), unless it already does."""
    latest = Path(path).with_name(LATEST)
    if not (latest.is_file() and os.path.samefile(latest, path)):
        _replace_with_link(Path(path), latest)


def _newer_latest(latest, iteration, map_location):
    """checkpoint.pt's state when it is loadable and newer than ``iteration``, else None."""
    try:
        state = load_checkpoint(latest, map_location)
    except ValueError:
        return None
    return state if state["iteration"] > iteration else None


def find_resume_checkpoint(path, map_location="cpu"):
    """The checkpoint to resume from: ``path`` itself when a file, else a run folder's newest loadable one.

    Returns (path, state, skipped): skipped lists (path, reason) of newer files that could not be loaded.
    """
    path = Path(path)
    if path.is_file():
        return path, load_checkpoint(path, map_location), []
    if not path.is_dir():
        raise ValueError(f"--resume {path}: no such checkpoint file or run folder")
    latest = path / LATEST
    candidates = numbered_checkpoints(path) + ([latest] if latest.is_file() else [])
    skipped = []
    for candidate in candidates:
        try:
            state = load_checkpoint(candidate, map_location)
        except ValueError as exc:
            skipped.append((candidate, str(exc)))
            continue
        if candidate != latest and latest.is_file() and not os.path.samefile(candidate, latest):
            newer = _newer_latest(latest, state["iteration"], map_location)
            if newer is not None:  # killed between save_run_checkpoint's two renames: checkpoint.pt is ahead
                return latest, newer, skipped
        return candidate, state, skipped
    reasons = "; ".join(reason for _, reason in skipped)
    raise ValueError(f"--resume {path}: no loadable checkpoint in this folder" + (f" ({reasons})" if reasons else ""))


REQUIRED_KEYS = ("iteration", "config", "data_shape", "num_classes", "G", "D", "G_ema", "opt_g", "opt_d",
                 "scaler_g", "scaler_d", "rng")


def read_torch_file(path, what="checkpoint", map_location="cpu"):
    """torch.load with weights_only=True; a missing, empty, foreign or object-holding file raises ValueError with
    one line naming it (``what``: "checkpoint", "encoder", ...), never torch's own advice to load unsafely."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{what} {path} is empty (0 bytes): it was never written completely")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused an object; torch's advice to disable it is not ours
        if not zipfile.is_zipfile(path):  # torch also reads arbitrary bytes as a legacy pickle, and fails
            raise ValueError(f"{path} is not a ganforge {what}: it is not a readable torch file") from None
        raise ValueError(f"{path} is not a ganforge {what}: it holds objects other than tensors and plain "
                         "containers, which are not loaded (loading them could run code)") from None
    except Exception:  # torch raises several types for truncated or foreign files; its text is no help here
        raise ValueError(f"{path} is not a ganforge {what}: it is not a readable torch file (truncated or "
                         "another format)") from None


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint safely; a missing, empty, foreign or incomplete file raises ValueError naming it."""
    state = read_torch_file(path, "checkpoint", map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a ganforge checkpoint (expected format {FORMAT!r})")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise ValueError(f"checkpoint {path} is incomplete: it lacks {', '.join(missing)}")
    return state


# Fields that shape the models or the optimizer state: a resumed run must agree with its checkpoint on them; and
# fields a resumed run may change: applied to the restored state and reported (trainer logs them). Each field's
# class is declared with it (engine.config, `resume=`).
ARCHITECTURE_FIELDS = fields_with_resume_class("architecture")
TUNABLE_FIELDS = fields_with_resume_class("tunable")


def hyperparameter_changes(saved_config, cfg):
    """{field: (checkpoint's value, value now)} for each tunable field a resumed run changes."""
    saved = TrainConfig.from_dict(saved_config).to_dict()  # a None an older version saved: the preset it stood for
    return {name: (saved[name], getattr(cfg, name)) for name in TUNABLE_FIELDS
            if name in saved_config and saved[name] != getattr(cfg, name)}


def check_same_architecture(state, cfg, path, data_shape=None):
    """Refuse a checkpoint of another architecture, or of data of another shape (``data_shape``, when known)."""
    # a field newer than the checkpoint had its default there; a configuration too old to read raises, naming path
    saved = TrainConfig.from_dict(state["config"], source=path).to_dict()
    mismatched = [f"{flag(name)} {saved[name]!r} in the checkpoint, {getattr(cfg, name)!r} now"
                  for name in ARCHITECTURE_FIELDS if saved[name] != getattr(cfg, name)]
    if data_shape is not None and list(state.get("data_shape", data_shape)) != list(data_shape):
        shape = "x".join(map(str, state["data_shape"]))
        mismatched.append(f"its data are {shape}, the data now are {'x'.join(map(str, data_shape))}")
    if mismatched:
        raise ValueError(f"cannot resume from {path}: " + "; ".join(mismatched))


def restore_training_state(train_state, state, path="checkpoint"):
    """Load a checkpoint's weights, optimizer and scaler states and RNG into live training objects.

    Hyperparameters the live config changes are applied: learning rates and betas into the restored optimizers
    (the rest are read from the config by the steps); an EMA the checkpoint lacks starts from the restored G.
    A checkpoint of another architecture is refused before anything is loaded. Returns the checkpoint's
    iteration and the hyperparameter changes applied ({field: (was, now)}).
    """
    saved = state["config"]
    cfg = train_state.cfg
    check_same_architecture(state, cfg, path, data_shape=tuple(train_state.pixels.shape[1:]))
    train_state.G.load_state_dict(state["G"])
    train_state.D.load_state_dict(state["D"])
    if train_state.G_ema is not None:
        train_state.G_ema.load_state_dict(state["G_ema"] if state["G_ema"] is not None else state["G"])
        train_state.ema_norm_updates = None  # other weights: recompute its BatchNorm statistics before sampling
    train_state.opt_g.load_state_dict(state["opt_g"])
    train_state.opt_d.load_state_dict(state["opt_d"])
    train_state.scaler_g.load_state_dict(state["scaler_g"])
    train_state.scaler_d.load_state_dict(state["scaler_d"])
    changes = hyperparameter_changes(saved, cfg)
    changes.update(data_changes(state.get("data"), train_state.data_identity))  # other data: reported, not refused
    train_state.set_learning_rates(lr_g=cfg.lr_g if "lr_g" in changes else None,
                                   lr_d=cfg.lr_d if "lr_d" in changes else None)
    for optimizer in (train_state.opt_g, train_state.opt_d):
        if "beta1" in changes or "beta2" in changes:
            for group in optimizer.param_groups:
                if "betas" in group:
                    group["betas"] = (cfg.beta1, cfg.beta2)
    # Device-side counters; older checkpoints lack them and the counters then start afresh. A fixed --augment-p
    # comes from the live config; only the adaptive strength is training state.
    if "augment_p" in state and train_state.augment.adaptive:
        train_state.augment.p.copy_(state["augment_p"])
    if "ema_images" in state:
        train_state.ema_images.copy_(state["ema_images"])
    if "lecam_ema" in state:
        train_state.lecam_ema.copy_(state["lecam_ema"])
    restore_rng_state(state["rng"])
    return state["iteration"], changes


def load_generator(path, device="cpu", use_ema=True, kernels="auto"):
    """Rebuild G from a checkpoint for sampling or scoring: returns (G in eval mode, TrainConfig, num_classes).
    An attribute-conditioned G names its attributes in ``G.attribute_names`` and carries their bank."""
    from ..models import build_models

    state = load_checkpoint(path)
    cfg = TrainConfig.from_dict(state["config"], source=path)
    G, _ = build_models(cfg.model, tuple(state["data_shape"]), cfg.z_dim, state["num_classes"], cfg.width,
                        impl=kernels, backbone=cfg.vae_backbone,
                        attribute_names=tuple(state.get("attribute_names", ())))
    weights = state["G_ema"] if use_ema and state["G_ema"] is not None else state["G"]
    G.load_state_dict(weights)
    return G.to(device).eval(), cfg, state["num_classes"]
