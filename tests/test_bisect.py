"""`ganforge bench bisect` on small git repositories built here: a planted slow commit is found by its full sha,
the good and probed commits are measured alternately, endpoints that do not bracket a change exit 2, a planted
count rise is found, and the shim runs a worktree's code instead of the installed package's."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ganforge.bench import bisect, harness

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_NOSYSTEM": "1"}

# Writes a results file whose one training row's images/s is the number in speed.txt, and appends the commit it
# ran on to the log named by its second argument.
MEASURE = """\
import json, pathlib, subprocess, sys
out, log = sys.argv[1], sys.argv[2]
speed = float(pathlib.Path("speed.txt").read_text())
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
with open(log, "a") as f:
    f.write(commit + "\\n")
row = {"name": "toy-28", "model": "toy", "objective": "default", "penalty": "r1", "batch_size": 8,
       "column": "steps", "images_per_sec": speed, "spread": 0.0}
other = dict(row, column="loop", images_per_sec=1.0)
json.dump({"schema": "ganforge-bench/1", "kernels": [], "train": [row, other]}, open(out, "w"))
"""


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, env={**os.environ, **GIT_ENV}, check=True,
                          capture_output=True, text=True).stdout.strip()


def commit(repo, message, files):
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", *files)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def make_repo(path, n_commits, planted, files_of):
    """A repository of ``n_commits`` commits; files_of(i, is_bad) gives commit i's changed files. Its shas."""
    path.mkdir()
    git(path, "init", "-q")
    shas = []
    for i in range(n_commits):
        shas.append(commit(path, f"change {i}" + (" (planted)" if i == planted else ""), files_of(i, i >= planted)))
    return shas


@pytest.fixture
def speed_repo(tmp_path):
    """Eight commits; from commit 5 on, speed.txt halves (100 -> 50 images/s)."""
    def files_of(i, slow):
        files = {"notes.txt": f"note {i}\n", "speed.txt": "50\n" if slow else "100\n"}
        return {**files, "measure.py": MEASURE} if i == 0 else files
    return tmp_path / "repo", make_repo(tmp_path / "repo", 8, 5, files_of)


def run_bisect(argv, capsys):
    parser, module = harness.case_parser(harness.BY_NAME["bisect"])
    args = parser.parse_args(argv)
    args.case = "bisect"
    code = module.run(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def command_args(repo, tmp_path, *extra):
    log = tmp_path / "measured.log"
    command = f"{sys.executable} measure.py {{out}} {log}"
    return ["--repo", str(repo), "--command", command, "--out", str(tmp_path / "bisect.json"), *extra]


def test_the_planted_slow_commit_is_the_first_bad_commit(speed_repo, tmp_path, capsys):
    repo, shas = speed_repo
    code, out, err = run_bisect(["--good", shas[0], "--bad", shas[-1], "--column", "steps"]
                                + command_args(repo, tmp_path), capsys)
    assert code == 0, err
    assert out.splitlines()[-1] == f"first bad commit: {shas[5]}"
    report = json.loads((tmp_path / "bisect.json").read_text())
    assert report["first_bad"] == shas[5] and (report["good"], report["bad"]) == (shas[0], shas[-1])
    assert report["measurement"]["figure"] == "toy-28 default b8 steps"
    by_sha = {probe["sha"]: probe for probe in report["probes"]}
    assert by_sha[shas[-1]]["role"] == "bad endpoint"
    for sha, probe in by_sha.items():
        slow = shas.index(sha) >= 5
        assert probe["figures"] == {"good": [100.0, 100.0], "probe": [50.0, 50.0] if slow else [100.0, 100.0],
                                    "ratios": [0.5, 0.5] if slow else [1.0, 1.0]}
        assert probe["rounds_agree"]
        assert probe["ratio"] == (0.5 if slow else 1.0) and probe["verdict"] == ("bad" if slow else "good")
    # binary search over 7 commits: the bad endpoint, then at most 3 probes, each probed commit once
    assert len(report["probes"]) <= 4 and len(by_sha) == len(report["probes"])
    assert shas[4] in by_sha and shas[5] in by_sha  # the last good and the first bad were both measured
    assert "round 2/2" in err and shas[5][:12] in out


def test_good_and_probe_are_measured_alternately(speed_repo, tmp_path, capsys):
    repo, shas = speed_repo
    code, _, err = run_bisect(["--good", shas[0], "--bad", shas[-1], "--rounds", "3", "--name", "toy-28",
                               "--column", "steps", "--batch", "8", "--objective", "default"]
                              + command_args(repo, tmp_path), capsys)
    assert code == 0, err
    measured = (tmp_path / "measured.log").read_text().split()
    report = json.loads((tmp_path / "bisect.json").read_text())
    expected = []
    for probe in report["probes"]:
        expected += [shas[0], probe["sha"]] * 3
    assert measured == expected


def test_a_bad_revision_that_is_not_slower_exits_2(speed_repo, tmp_path, capsys):
    repo, shas = speed_repo
    code, out, err = run_bisect(["--good", shas[0], "--bad", shas[4], "--column", "steps"]
                                + command_args(repo, tmp_path), capsys)
    assert code == 2, err
    assert f"the bad revision {shas[4][:12]} does not measure bad" in out
    assert "first bad commit:" not in out
    report = json.loads((tmp_path / "bisect.json").read_text())
    assert report["first_bad"] is None and [p["sha"] for p in report["probes"]] == [shas[4]]


def test_a_slowdown_inside_the_threshold_is_good(speed_repo, tmp_path, capsys):
    repo, shas = speed_repo
    code, out, _ = run_bisect(["--good", shas[0], "--bad", shas[-1], "--column", "steps", "--threshold", "150%"]
                              + command_args(repo, tmp_path), capsys)
    assert code == 2 and "does not measure bad (+100.0% against good)" in out


def test_an_ambiguous_figure_is_refused_with_the_rows(speed_repo, tmp_path, capsys):
    repo, shas = speed_repo
    code, _, err = run_bisect(["--good", shas[0], "--bad", shas[-1]] + command_args(repo, tmp_path), capsys)
    assert code == 1
    assert "2 rows match" in err and "toy-28 default b8 steps" in err and "toy-28 default b8 loop" in err


@pytest.mark.parametrize("problem", ["unknown revision", "not a git checkout", "uncommitted changes", "not ancestor"])
def test_errors_are_one_line(speed_repo, tmp_path, capsys, problem):
    repo, shas = speed_repo
    good, bad, folder = shas[0], shas[-1], repo
    if problem == "unknown revision":
        bad = "no-such-branch"
    elif problem == "not a git checkout":
        folder = tmp_path / "plain"
        folder.mkdir()
    elif problem == "uncommitted changes":
        (repo / "speed.txt").write_text("1\n")
    else:
        good, bad = shas[-1], shas[0]
    argv = ["--good", good, "--bad", bad] + command_args(repo, tmp_path)
    argv[argv.index("--repo") + 1] = str(folder)
    code, out, err = run_bisect(argv, capsys)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("bench bisect: error: ")
    assert {"unknown revision": "unknown revision 'no-such-branch'", "not a git checkout": "is not in a git checkout",
            "uncommitted changes": "has uncommitted changes", "not ancestor": "is not an ancestor of"}[problem] in err
    assert "worktree" not in git(repo, "worktree", "list").split("\n", 1)[-1]  # no worktree left behind


def counts_file(ops_of_g):
    """A counts file's steps: the G step's operators (two add ops plus the planted ones)."""
    operators = {"aten.add.Tensor": 2, "aten.mul.Tensor": ops_of_g - 2}
    steps = {"mlp/default/d": {"ops": 5, "allocations": 3, "bytes": 64, "host_reads": 0,
                               "operators": {"aten.add.Tensor": 5}},
             "mlp/default/g": {"ops": ops_of_g, "allocations": 2, "bytes": 32, "host_reads": 0,
                               "operators": {name: n for name, n in operators.items() if n}}}
    return json.dumps({"steps": steps})


@pytest.fixture
def counts_repo(tmp_path, monkeypatch):
    """Six commits whose counts.json the counts measurement reads (instead of running `ganforge bench counts`);
    commit 3 plants one more operator in the G step, commit 1 removes one from it (a fall is not bad)."""
    def measure_from_file(self, checkout):
        return json.loads((checkout.tree / "counts.json").read_text())["steps"]
    monkeypatch.setattr(bisect.Counts, "measure", measure_from_file)
    ops = {0: 4, 1: 3, 2: 3, 3: 4, 4: 4, 5: 4}
    def files_of(i, _):
        return {"counts.json": counts_file(ops[i]), "notes.txt": f"note {i}\n"}
    return tmp_path / "repo", make_repo(tmp_path / "repo", 6, 3, files_of)


def test_a_planted_count_rise_is_found(counts_repo, tmp_path, capsys):
    repo, shas = counts_repo
    code, out, err = run_bisect(["--good", shas[1], "--bad", shas[-1], "--counts", "--repo", str(repo),
                                 "--out", str(tmp_path / "counts-bisect.json")], capsys)
    assert code == 0, err
    assert out.splitlines()[-1] == f"first bad commit: {shas[3]}"
    assert "mlp/default/g: ops 3 -> 4; operators: aten.mul.Tensor 1 -> 2" in out
    report = json.loads((tmp_path / "counts-bisect.json").read_text())
    assert report["first_bad"] == shas[3] and report["measurement"]["kind"] == "counts"
    verdicts = {p["sha"]: p["verdict"] for p in report["probes"]}
    assert all(verdict == ("bad" if shas.index(sha) >= 3 else "good") for sha, verdict in verdicts.items())


def test_counts_endpoints_that_do_not_bracket_exit_2(counts_repo, tmp_path, capsys):
    repo, shas = counts_repo
    code, out, _ = run_bisect(["--good", shas[0], "--bad", shas[2], "--counts", "--repo", str(repo),
                               "--out", str(tmp_path / "b.json")], capsys)
    assert code == 2 and "does not measure bad (no count rose above good's)" in out  # 4 -> 3 ops is a fall


def test_a_good_revision_over_its_own_counts_baseline_exits_2(counts_repo, tmp_path, capsys):
    from ganforge.bench.counts import torch_major_minor

    repo, shas = counts_repo
    (repo / "bench").mkdir()
    baseline = json.loads(counts_file(2))
    baseline["torch_major_minor"] = torch_major_minor()
    good = commit(repo, "baseline below the counts", {"bench/counts_baseline.json": json.dumps(baseline)})
    bad = commit(repo, "more", {"counts.json": counts_file(9)})
    code, out, _ = run_bisect(["--good", good, "--bad", bad, "--counts", "--repo", str(repo),
                               "--out", str(tmp_path / "b.json")], capsys)
    assert code == 2 and f"the good revision {good[:12]} already measures bad" in out


def test_the_shim_runs_the_worktree_code_not_the_installed_package(tmp_path):
    """A commit's own ganforge/ and engine/ are what `python -m ganforge` runs, though ganforge is installed."""
    tree = tmp_path / "tree"
    (tree / "ganforge").mkdir(parents=True)
    (tree / "engine").mkdir()
    (tree / "ganforge" / "__init__.py").write_text("")
    (tree / "ganforge" / "__main__.py").write_text(
        "import sys, ganforge, ganforge.engine\n"
        "print(ganforge.engine.__file__)\n"
        "print(ganforge.engine.MARK, sys.argv[1:])\n")
    (tree / "engine" / "__init__.py").write_text("MARK = 'planted'\n")
    shim = bisect.build_shim(tree, tmp_path / "shim")
    done = subprocess.run(bisect.run_ganforge_argv(shim, ["bench", "x"]), cwd=tree, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    engine_file, mark = done.stdout.splitlines()
    assert engine_file.startswith(str((tmp_path / "shim").resolve() / "ganforge" / "engine"))
    assert Path(engine_file).resolve() == (tree / "engine" / "__init__.py").resolve()
    assert mark == "planted ['bench', 'x']"


def test_a_commit_without_the_subpackage_stops_instead_of_running_the_installed_one(tmp_path):
    tree = tmp_path / "tree"
    (tree / "ganforge").mkdir(parents=True)
    (tree / "ganforge" / "__init__.py").write_text("")
    (tree / "ganforge" / "__main__.py").write_text("print('ran')\n")
    shim = bisect.build_shim(tree, tmp_path / "shim")
    done = subprocess.run(bisect.run_ganforge_argv(shim, []), cwd=tree, capture_output=True, text=True)
    assert done.returncode != 0 and "ran" not in done.stdout


REPO = Path(__file__).resolve().parent.parent
COUNTS_ADDED, EMA_AS_TENSOR = "0432e78", "baf8cf1"  # bench counts; the next commit lowered a G step's host reads


@pytest.mark.slow
def test_counts_bisect_on_this_repository(tmp_path, capsys):
    """Two real commits through the shim: counts only fell from one to the next, so BAD does not measure bad."""
    if subprocess.run(["git", "cat-file", "-e", f"{EMA_AS_TENSOR}^{{commit}}"], cwd=REPO,
                      capture_output=True).returncode != 0:
        pytest.skip("this checkout does not hold the commits (not a git clone, or a shallow one)")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--shared", str(REPO), str(clone)], check=True)
    code, out, err = run_bisect(["--good", COUNTS_ADDED, "--bad", EMA_AS_TENSOR, "--counts", "--repo", str(clone),
                                 "--out", str(tmp_path / "b.json")], capsys)
    assert code == 2, err
    report = json.loads((tmp_path / "b.json").read_text())
    figures = report["probes"][0]["figures"]
    assert figures["rises"] == [] and any("host_reads 1 -> 0" in fall for fall in figures["falls"])
    assert figures["probe_ops"] < figures["good_ops"]


def test_select_figure_picks_one_training_or_kernel_row():
    train = [{"name": "mlp-28", "model": "mlp", "objective": obj, "penalty": "r1", "batch_size": 32, "column": col,
              "images_per_sec": 1.0} for obj in ("default", "wgan-gp") for col in ("steps", "loop")]
    kernels = [{"op": "bias_act", "pass": "fwd", "impl": impl, "numel": 4096, "dtype": "fp32", "shape": [64, 64],
                "median_ms": 0.1} for impl in ("triton", "ref")]
    results = {"train": train, "kernels": kernels}
    key = bisect.select_figure(results, {"name": "mlp-28", "column": "loop", "objective": "wgan-gp", "batch": 32})
    assert key == ("train", "mlp-28", "wgan-gp", 32, "loop")
    assert bisect.select_figure(results, {"name": "bias_act", "column": "ref"})[3] == "ref"
    with pytest.raises(bisect.BisectError, match="no row matches"):
        bisect.select_figure(results, {"name": "dcgan-28"})
    with pytest.raises(bisect.BisectError, match="2 rows match"):
        bisect.select_figure(results, {"name": "mlp-28", "column": "steps"})


def test_the_timed_case_command_carries_the_case_and_the_shared_options(tmp_path):
    parser, _ = harness.case_parser(harness.BY_NAME["bisect"])
    args = parser.parse_args(["--good", "a", "--bad", "b", "--case-args", "--models mlp-28 --columns steps",
                              "--repeats", "5", "--device", "cpu"])
    args.case = "bisect"  # what the harness sets: the measured case is not this one
    argv = bisect.Timed(args, 0.1, tmp_path).case_argv(tmp_path / "r.json")
    assert argv == ["bench", "train", "--out", str(tmp_path / "r.json"), "--history", "off", "--models", "mlp-28",
                    "--columns", "steps", "--device", "cpu", "--repeats", "5"]


def scripted_figures(monkeypatch, figures):
    """Timed.measure returning these figures in turn (GOOD's and the probe's, round after round)."""
    def scripted(self, checkout):
        self.key = ("train", "toy-28", "default", 8, "steps")
        return figures.pop(0), False
    monkeypatch.setattr(bisect.Timed, "measure", scripted)


def test_rounds_on_both_sides_of_the_threshold_are_flagged(speed_repo, tmp_path, capsys, monkeypatch):
    """The median of the rounds' ratios decides; rounds that disagree are said beside the verdict."""
    repo, shas = speed_repo
    scripted_figures(monkeypatch, [100.0, 50.0, 100.0, 120.0, 100.0, 60.0])  # ratios 0.5, 1.2, 0.6
    code, out, err = run_bisect(["--good", shas[4], "--bad", shas[5], "--rounds", "3", "--max-rounds", "3"]
                                + command_args(repo, tmp_path), capsys)
    assert code == 0, err
    assert "0.600 (0.50 / 1.20 / 0.60)" in out and "bad (2 of 3 rounds)" in out
    report = json.loads((tmp_path / "bisect.json").read_text())
    probe = report["probes"][0]
    assert (probe["rounds_agree"], probe["rounds_agreeing"]) == (False, 2) and report["first_bad"] == shas[5]


def test_rounds_are_added_until_three_in_four_agree(speed_repo, tmp_path, capsys, monkeypatch):
    repo, shas = speed_repo
    figures = [100.0, 50.0, 100.0, 120.0, 100.0, 60.0, 100.0, 55.0, 100.0, 100.0]  # ratios 0.5, 1.2, 0.6, 0.55
    scripted_figures(monkeypatch, figures)
    code, out, err = run_bisect(["--good", shas[4], "--bad", shas[5]] + command_args(repo, tmp_path), capsys)
    assert code == 0, err
    assert "round 3/2 (extra: the rounds disagree; at most 6)" in err and "round 5" not in err
    assert len(figures) == 2  # stopped after four rounds: three of them bad
    assert "0.575 (0.50 / 1.20 / 0.60 / 0.55)" in out and "bad (3 of 4 rounds)" in out


@pytest.mark.parametrize("failure", ["command fails", "ctrl-c"])
def test_worktrees_are_removed_when_a_measurement_fails_or_is_interrupted(speed_repo, tmp_path, capsys, monkeypatch,
                                                                         failure):
    repo, shas = speed_repo
    argv = ["--good", shas[0], "--bad", shas[-1]] + command_args(repo, tmp_path)
    if failure == "command fails":
        argv[argv.index("--command") + 1] = f"{sys.executable} -c \"raise SystemExit('no measure here')\""
        code, out, err = run_bisect(argv, capsys)
        assert code == 1 and err.strip().splitlines()[-1] == (
            f"bench bisect: error: the measurement failed on {shas[0][:12]} (exit 1): no measure here")
    else:
        def interrupted(self, checkout):
            raise KeyboardInterrupt
        monkeypatch.setattr(bisect.Timed, "measure", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_bisect(argv, capsys)
    assert len(git(repo, "worktree", "list").splitlines()) == 1  # the checkout itself only
    assert not (tmp_path / "bisect.json").exists()
