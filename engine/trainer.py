"""train(): one training run from a config to its run folder, however it ends.

The run's parts live in their own modules: devices (where and in what precision it trains), session (data,
models, train state, runner; one iteration), loop (the loop, its schedule and clock, divergence), outputs
(samples, checkpoints, summary.json), resume (continuing from a checkpoint) and stopping (how a run ends early).
"""
from contextlib import ExitStack
from pathlib import Path

from . import distributed
from .data.stream import StreamFailed
from .devices import resolve_device
from .loop import train_loop
from .metrics.evaluate import check_scoring
from .resume import newest_checkpoint, restore, resume_folder
from .signals import SignalGuard
from .rundir import RunDir
from .session import assemble_session, build_session, run_iteration
from .stopping import (RanksLost, TrainingDiverged, TrainingFailed, TrainingInterrupted, TrainingStopped,
                       describe_os_error)

# The entry points most callers want, importable from here beside train().
__all__ = ["train", "build_session", "run_iteration", "TrainingStopped", "TrainingDiverged", "TrainingFailed",
           "TrainingInterrupted", "RanksLost"]


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
        if run_dir is not None:
            run_dir.clear_previous_run()
        try:
            summary = train_loop(session, out, start, resume is not None, signals, references, run_dir)
        except OSError as exc:  # a full disk, a folder made read-only or removed: one line, the checkpoints intact
            # a streamed dataset's failure names its own cause and fix; a failed write's fix is the folder
            remedy = "" if isinstance(exc, StreamFailed) else "free the space or fix the folder, then "
            raise TrainingFailed(f"{describe_os_error(exc)}; the last good checkpoint is "
                                 f"{newest_checkpoint(out)}; {remedy}continue with --resume {out}") from exc
        except RuntimeError as exc:
            if not (world.launched and distributed.is_collective_failure(exc)):
                raise
            lost = exc if isinstance(exc, distributed.RankLost) else world.lost(exc)
            raise RanksLost(f"{lost}; the checkpoints in {out} are intact: continue with --resume {out}") from exc
    world.stop()
    return summary
