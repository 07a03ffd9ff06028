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
                             f"{abandoned_folder(run_folder, state['iteration'])}/")
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
    if run_folder is not None and main and path.name != ckpt.LATEST:
        ckpt.point_latest_at(path)  # checkpoint.pt names the newest checkpoint, which this history continues from
    return start


def abandoned_folder(run_folder, iteration):
    """Where a branch abandoned at ``iteration`` goes: abandoned-NNNNNN/, or abandoned-NNNNNN-2/, -3/ ... when an
    earlier branch abandoned at the same iteration holds that name (a record of another history is never replaced)."""
    first = Path(run_folder) / f"abandoned-{iteration:06d}"
    aside, count = first, 1
    while aside.exists():
        count += 1
        aside = first.with_name(f"{first.name}-{count}")
    return aside


def abandon(run_folder, newer, iteration):
    """--discard-newer: the abandoned history's checkpoints, its samples after ``iteration`` and its best generator
    (when it was found after ``iteration``) move into a new abandoned-NNNNNN/ folder; its log and summary are
    copied there."""
    run_folder = Path(run_folder)
    aside = abandoned_folder(run_folder, iteration)
    aside.mkdir()
    # the resumed run would write samples of the same names over these
    moved = newer + [p for p in run_folder.glob("samples_*.png") if p.stem.removeprefix("samples_").isdigit()
                     and int(p.stem.removeprefix("samples_")) > iteration]
    best = run_folder / "checkpoint-best.pt"
    if best.is_file() and _iteration_of(best) > iteration:
        moved.append(best)  # found after the resumed checkpoint: the resumed history never reached it
    for path in moved:
        path.rename(aside / path.name)
    for name in ("log.jsonl", "summary.json"):
        if (run_folder / name).is_file():
            shutil.copy2(run_folder / name, aside / name)  # the folder's own copy is cut back on resume
    print(f"moved {len(newer)} newer checkpoint(s) and the log into {aside}", file=sys.stderr)


def _iteration_of(path):
    """A checkpoint's iteration; an unreadable file counts as newest, so it goes aside rather than stays."""
    try:
        return ckpt.load_checkpoint(path)["iteration"]
    except ValueError:
        return float("inf")
