"""Continuing a run from a checkpoint: which checkpoint, loading it into a session, and what happens to a run
folder's newer or unloadable checkpoints."""
import shutil
import sys
from pathlib import Path

from . import checkpoint as ckpt


def resume_folder(resume):
    """The run folder a --resume path belongs to: the folder itself, or a checkpoint file's folder."""
    path = Path(resume).resolve()
    return path if path.is_dir() else path.parent


def newest_checkpoint(out):
    """The newest numbered checkpoint in the run folder ``out``, or a phrase saying there is none."""
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
    session.history = state.get("history", {})  # training time and FID curve so far (engine.loop carries them on)
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
