"""bench/history.py: figures of results files in SQLite, rebuilt from a folder, printed over commits."""
import json

import pytest

from ganforge.bench.history import query, rebuild, record
from ganforge.bench.results import SCHEMA
from ganforge.commands.bench import bench_command


def _results(commit, date, images_per_sec, ms=0.5):
    train = {"name": "mlp-28", "model": "mlp", "data_shape": [1, 28, 28], "objective": "default", "loss": "ns",
             "penalty": "r1", "batch_size": 64, "column": "eager-fp32", "precision": "fp32",
             "images_per_sec": images_per_sec}
    failed = dict(train, column="compile", images_per_sec=None, error="RuntimeError: double backward")
    kernel = {"op": "bias_act", "pass": "forward", "impl": "eager", "numel": 4096, "dtype": "bfloat16",
              "shape": [4, 16, 8, 8], "median_ms": ms}
    return {"schema": SCHEMA, "device": "cpu: x86_64 (2 threads)", "device_type": "cpu", "torch": "2.13.0",
            "triton": None, "git_commit": commit, "date": date, "quick": True, "notes": ["a note"],
            "ceilings": {}, "kernels": [kernel], "train": [train, failed], "mystery": [{"x": 1}]}


def test_record_and_query_round_trip(tmp_path):
    db = tmp_path / "h.sqlite"
    assert record(db, _results("a" * 40, "2026-12-02T10:00:00+00:00", 500.0)) == (2, 2)  # failed + unknown kind
    rows = query(db, case="mlp-28")
    assert len(rows) == 1
    row = rows[0]
    assert (row["model"], row["objective"], row["column_name"], row["batch"], row["shape"], row["dtype"]) == \
        ("mlp", "default", "eager-fp32", 64, "1x28x28", "fp32")
    assert (row["git_commit"], row["machine"], row["torch"], row["triton"]) == \
        ("a" * 40, "cpu: x86_64 (2 threads)", "2.13.0", "")
    assert (row["value"], row["unit"]) == (500.0, "images/s")
    kernel, = query(db, case="kernel/bias_act/forward")
    assert (kernel["column_name"], kernel["value"], kernel["unit"], kernel["shape"]) == ("eager", 0.5, "ms", "4x16x8x8")
    assert query(db, commit="aaaa") and not query(db, commit="bbbb")


def _folder(tmp_path):
    folder = tmp_path / "results"
    (folder / "one").mkdir(parents=True)
    (folder / "two").mkdir()
    # the newer file sorts first by path: the history must still come out in date order
    (folder / "one" / "new.json").write_text(json.dumps(_results("b" * 40, "2026-12-03T09:00:00+00:00", 600.0)))
    (folder / "two" / "old.json").write_text(json.dumps(_results("a" * 40, "2026-12-01T09:00:00+00:00", 500.0)))
    (folder / "two" / "summary.json").write_text(json.dumps({"fid": 12.0, "git_commit": "c" * 40}))
    (folder / "two" / "broken.json").write_text("{not json")
    return folder


def test_rebuild_gives_both_commits_in_date_order_and_skips_other_json(tmp_path):
    db = tmp_path / "h.sqlite"
    record(db, _results("f" * 40, "2026-11-01T00:00:00+00:00", 1.0))  # gone after the rebuild
    assert rebuild(db, _folder(tmp_path)) == (2, 4, 2, 4)
    rows = query(db, case="mlp-28", column="eager-fp32")
    assert [(r["git_commit"][0], r["value"]) for r in rows] == [("a", 500.0), ("b", 600.0)]


def test_cli_rebuild_and_table(tmp_path, capsys):
    db = str(tmp_path / "h.sqlite")
    assert bench_command(["history", "rebuild", str(_folder(tmp_path)), "--history", db]) == 0
    assert "loaded 2 results files, 4 rows" in capsys.readouterr().out
    assert bench_command(["history", "--history", db, "--case", "mlp-28", "--model", "mlp"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| date | commit | machine |")
    assert len(lines) == 4
    assert "aaaaaaaaaa" in lines[2] and "500 images/s" in lines[2]
    assert "bbbbbbbbbb" in lines[3] and "600 images/s" in lines[3]
    assert bench_command(["history", "--history", db, "--case", "nothing"]) == 0
    assert capsys.readouterr().out.strip() == "no rows match"


def test_history_defaults_to_the_environment(tmp_path, monkeypatch):
    from ganforge.bench.history import default_path, record_quietly

    monkeypatch.setenv("GANFORGE_HISTORY", str(tmp_path / "env.sqlite"))
    assert default_path() == tmp_path / "env.sqlite"
    record_quietly(_results("a" * 40, "2026-12-01T09:00:00+00:00", 5.0))
    assert len(query(None)) == 2


def test_a_history_failure_only_warns(tmp_path, capsys):
    from ganforge.bench.history import record_quietly

    blocker = tmp_path / "file"
    blocker.write_text("")
    record_quietly(_results("a" * 40, "2026-12-01T09:00:00+00:00", 5.0), db_path=blocker / "h.sqlite")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("warning: bench history not updated")


def test_p20_p80_are_kept_and_an_older_database_gains_them(tmp_path):
    import sqlite3

    db = tmp_path / "old.sqlite"
    old_columns = ("case_name", "model", "objective", "column_name", "batch", "shape", "dtype", "git_commit",
                   "machine", "torch", "triton", "date", "figure", "value", "unit")
    with sqlite3.connect(str(db)) as con:  # the table as written before p20 / p80 existed
        con.execute(f"CREATE TABLE figures (id INTEGER PRIMARY KEY AUTOINCREMENT, {', '.join(old_columns)})")
    results = _results("a" * 40, "2026-12-02T10:00:00+00:00", 500.0, ms=0.5)
    results["train"][0].update(images_per_sec_p20=480.0, images_per_sec_p80=520.0)
    results["kernels"][0].update(p20_ms=0.45, p80_ms=0.6)
    assert record(db, results) == (2, 2)
    train, = query(db, case="mlp-28")
    kernel, = query(db, case="kernel/bias_act/forward")
    assert (train["p20"], train["p80"]) == (480.0, 520.0) and (kernel["p20"], kernel["p80"]) == (0.45, 0.6)


def test_history_through_the_harness(tmp_path, capsys):
    from ganforge.bench.harness import main

    db = str(tmp_path / "h.sqlite")
    assert main(["history", "rebuild", str(_folder(tmp_path)), "--history", db]) == 0
    assert "loaded 2 results files, 4 rows" in capsys.readouterr().out
    assert main(["history", "show", "--history", db, "--column", "eager-fp32"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
    assert main(["history", "rebuild", "--history", db]) == 2  # no folder named


def test_backfill_measures_each_commit_in_its_own_worktree_for_each_round(tmp_path, monkeypatch, capsys):
    """backfill runs the case at every named commit, in turn, once per round; each results file is kept under --out
    and its figures recorded. The measurement is a stand-in that writes a results file naming the checked-out
    commit (the real one would time `ganforge bench train` in the commit's code)."""
    import subprocess
    import sys

    from ganforge.bench import bisect

    repo = tmp_path / "repo"
    repo.mkdir()
    run = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=repo,  # noqa: E731
                                    check=True, capture_output=True, text=True).stdout.strip()
    run("init", "-q")
    shas = []
    for speed in (100, 60):
        (repo / "speed.txt").write_text(str(speed))
        run("add", "speed.txt")
        run("commit", "-qm", f"speed {speed}")
        shas.append(run("rev-parse", "HEAD"))
    writer = ("import json, subprocess, sys; out = sys.argv[sys.argv.index('--out') + 1]; "
              "sha = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True).stdout.strip(); "
              f"row = json.loads({json.dumps(json.dumps(_results('x', 'd', 1)['train'][0]))}); "
              "row['images_per_sec'] = float(open('speed.txt').read()); "
              f"json.dump({{'schema': '{SCHEMA}', 'git_commit': sha, 'device': 'cpu', 'date': sha, "
              "'command': 'ganforge ' + ' '.join(sys.argv[1:]), "
              "'train': [row], 'kernels': []}, open(out, 'w'))")
    monkeypatch.setattr(bisect.Checkout, "ganforge_argv", lambda self, args: [sys.executable, "-c", writer, *args])
    monkeypatch.chdir(repo)
    db, out = tmp_path / "h.sqlite", repo / "files"
    assert bench_command(["history", "backfill", "--commits", f"{shas[0]},HEAD", "--rounds", "2",
                          "--out", "files", "--history", str(db)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"train-{sha[:12]}-r{r}.json" for sha in shas for r in (1, 2))
    written = json.loads((out / f"train-{shas[0][:12]}-r1.json").read_text())
    assert f"--out files/train-{shas[0][:12]}-r1.json" in written["command"]  # as asked for, not the absolute one
    assert str(tmp_path) not in written["command"]
    figures = {(row["git_commit"], row["value"]) for row in query(db)}
    assert figures == {(shas[0], 100.0), (shas[1], 60.0)} and len(query(db)) == 4
    assert "2 commits x 2 rounds" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown revision"):
        bench_command(["history", "backfill", "--commits", "nope", "--out", str(out), "--history", str(db)])


def test_the_other_bench_cases_figures_are_kept_too(tmp_path):
    """penalty-cost, scaling, quality and metrics-cost files add their figures, keyed by case; a file of another kind
    adds none."""
    header = {"git_commit": "c1", "device": "cpu", "date": "2026-12-05T00:00:00"}
    files = [
        {**header, "schema": "ganforge-penalty-cost/1", "model": "mlp-28", "batch_size": 64,
         "rows": [{"column": "explicit", "penalty": "r1+r2", "precision": "fp32", "ms_per_d_step": 8.4,
                   "ms_per_d_step_p20": 8.0, "ms_per_d_step_p80": 9.0}]},
        {**header, "schema": "ganforge-scaling/1", "rows": [{"launch": "torchrun", "nproc": 2, "batch_per_rank": 64,
                                                             "images_per_sec": 5000.0}]},
        {**header, "schema": "ganforge-quality/1", "curves": [{"name": "default", "kind": "recipe", "points": [
            {"mark_s": 60, "fid": 27.2}, {"mark_s": 300, "fid": 6.3}]}]},
        {**header, "schema": "ganforge-metrics-cost/1", "rows": [{"samples": 2000, "metric_seconds": {"fid": 0.004}}]},
        {**header, "schema": "something-else/1", "rows": [{"x": 1}]},
    ]
    db = tmp_path / "h.sqlite"
    for results in files:
        record(db, results)
    got = {(r["case_name"], r["model"], r["column_name"], r["batch"]): (r["value"], r["unit"], r["p20"], r["p80"])
           for r in query(db)}
    assert got == {
        ("penalty-cost", "mlp-28", "explicit", 64): (8.4, "ms", 8.0, 9.0),
        ("scaling", "", "torchrun x2", 64): (5000.0, "images/s", None, None),
        ("quality", "default", "FID at 60 s", 0): (27.2, "FID", None, None),
        ("quality", "default", "FID at 300 s", 0): (6.3, "FID", None, None),
        ("metrics-cost", "", "fid", 2000): (0.004, "s", None, None)}
