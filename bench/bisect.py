"""`ganforge bench bisect --good REV --bad REV`: the first commit where a figure or a count got worse.

    ganforge bench bisect --good REV --bad REV [--case train] [--case-args "--models mlp-28 --columns steps"]
                          [--name M] [--column C] [--objective O] [--batch B] [--rounds 2] [--threshold 10%]
    ganforge bench bisect --good REV --bad REV --counts
    ganforge bench bisect --good REV --bad REV --command "python measure.py --out {out}"

The commits searched are the first-parent line from GOOD (excluded) to BAD (included), `git rev-list
--first-parent --reverse GOOD..BAD`, by binary search. Each probed commit is checked out in a temporary git
worktree and measured with this Python environment but that commit's code (see run_ganforge_argv).

What is measured:

    timed (default)  `python -m ganforge bench CASE --out F --history off CASE-ARGS` in the worktree, and one figure
                     of its results (a training row's images/s or a kernel row's ms, picked with --name, --column,
                     --objective, --batch). The good commit and the probe are measured alternately, --rounds times
                     each (good, probe, good, probe, ...), so that the machine's drift cancels in their ratio; the
                     probe is bad when the median of the rounds' ratios is slower than the good commit by more than
                     --threshold. While fewer than 3 in 4 rounds agree, rounds are added (up to --max-rounds).
    --counts         `python -m ganforge bench counts --out F`: the probe is bad when any count of any step rose
                     above the good commit's. Counts are deterministic: the good commit is measured once.
    --command CMD    a shell command run in the worktree that writes a results JSON (bench/results.py) to {out};
                     judged as a timed measurement.

Exit status: 0 when the first bad commit is found; 2 when the endpoints do not bracket a change (BAD does not
measure bad, or under --counts GOOD already fails its own counts baseline): nothing is guessed; 1 on an error
(an unknown revision, a folder that is not a clean git checkout, a measurement that failed).
"""
import datetime
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ..engine.provenance import command_line
from .compare import key_fields, parse_threshold, tracked_figures
from .compare import label as figure_label
from .report import markdown_table

SCHEMA = "ganforge-bisect/1"
SUBPACKAGES = ("engine", "kernels", "models", "bench")  # top-level folders that are ganforge.* when installed
SUBJECT_WIDTH = 48


class BisectError(ValueError):
    """A bisection that cannot go on; the message is one line for the user."""


def add_arguments(parser):
    parser.add_argument("--good", required=True, help="a revision that measures good (excluded from the search)")
    parser.add_argument("--bad", required=True, help="a revision that measures bad, on GOOD's first-parent line")
    parser.add_argument("--repo", default=".", help="the git checkout whose history is searched (default: here)")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--counts", action="store_true",
                      help="measure `ganforge bench counts`: bad when any count of any step rose above GOOD's")
    kind.add_argument("--command", help="shell command run in each probed commit's worktree that writes a bench "
                                        "results JSON to {out} (instead of `python -m ganforge bench CASE`)")
    parser.add_argument("--case", dest="measured_case", default="train",
                        help="timed: the bench case measured (default train)")
    parser.add_argument("--case-args", default="",
                        help='timed: the case\'s flags as one string, e.g. "--models mlp-28 --columns steps"')
    parser.add_argument("--name", "--model", dest="name", help="timed: the row's model config (mlp-28) or kernel op")
    parser.add_argument("--column", help="timed: the row's column (steps, eager-fp32, ...) or kernel impl")
    parser.add_argument("--objective", help="timed: the training row's objective (default, wgan-gp, ...)")
    parser.add_argument("--batch", type=int, help="timed: the training row's batch size")
    parser.add_argument("--rounds", type=int, default=2,
                        help="timed: measurements of GOOD and of each probe, alternated (default 2)")
    parser.add_argument("--max-rounds", type=int, default=None,
                        help="timed: rounds are added while fewer than 3 in 4 agree, up to this many "
                             "(default 3 x --rounds)")
    parser.add_argument("--threshold", default="10%", help="timed: a slowdown beyond this is bad (default 10%%)")


def run(args):
    try:
        return bisect(args)
    except BisectError as exc:
        print(f"bench bisect: error: {exc}", file=sys.stderr)
        return 1


def progress(text):
    print(f"bisect: {text}", file=sys.stderr, flush=True)


# --- git ---------------------------------------------------------------------------------------------------------

def git(root, *args):
    """A git command's stdout; a failure is a BisectError with git's own last line."""
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise BisectError(f"git {' '.join(args)}: {lines[-1] if lines else f'exit {done.returncode}'}")
    return done.stdout.strip()


def checkout_root(folder):
    """The top of the git checkout holding ``folder``, which must have no uncommitted changes to tracked files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BisectError(f"{folder} is not a folder")
    done = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        raise BisectError(f"{folder.resolve()} is not in a git checkout")
    root = Path(done.stdout.strip())
    if git(root, "status", "--porcelain", "--untracked-files=no"):
        raise BisectError(f"{root} has uncommitted changes; commit or stash them first (bisect compares commits, "
                          "and a dirty tree makes `git worktree` and the results' commit ambiguous)")
    return root


def resolve(root, rev):
    """The full sha of a revision, or a BisectError naming it."""
    done = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=root,
                          capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        raise BisectError(f"unknown revision {rev!r} in {root}")
    return done.stdout.strip()


def first_parent_line(root, good, bad):
    """The commits after GOOD up to BAD on BAD's first-parent line, oldest first."""
    if good == bad:
        raise BisectError("--good and --bad are the same commit")
    if subprocess.run(["git", "merge-base", "--is-ancestor", good, bad], cwd=root).returncode != 0:
        raise BisectError(f"--good {good[:12]} is not an ancestor of --bad {bad[:12]}")
    line = git(root, "rev-list", "--first-parent", "--reverse", f"{good}..{bad}").split()
    if not line or line[-1] != bad:
        raise BisectError(f"--bad {bad[:12]} is not on a first-parent line from --good {good[:12]}")
    return line


def subject(root, sha):
    return git(root, "log", "-1", "--format=%s", sha)


# --- worktrees and the shim --------------------------------------------------------------------------------------

@contextmanager
def worktree(root, sha, parent):
    """A detached worktree of ``sha`` under ``parent``, removed on the way out (errors and Ctrl-C included)."""
    path = Path(tempfile.mkdtemp(prefix=f"{sha[:12]}-", dir=parent))
    path.rmdir()  # `git worktree add` wants to create the folder itself
    git(root, "worktree", "add", "--detach", str(path), sha)
    try:
        yield path
    finally:
        remove_worktree(root, path)


def remove_worktree(root, path):
    done = subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=root, capture_output=True)
    if done.returncode != 0:  # a folder removed under us: drop git's bookkeeping of it
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=root, capture_output=True)


def build_shim(tree, shim_root):
    """A folder holding a ``ganforge`` package made of the worktree's code: the entries of its ganforge/ plus its
    top-level engine/, kernels/, models/ and bench/ (symlinks), as the installed package maps them."""
    package = Path(shim_root) / "ganforge"
    package.mkdir(parents=True)
    if not (tree / "ganforge" / "__init__.py").is_file():
        raise BisectError(f"{tree.name}: no ganforge/ package in this commit")
    for entry in (tree / "ganforge").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for folder in SUBPACKAGES:
        if (tree / folder).is_dir():
            (package / folder).symlink_to(tree / folder)
    return Path(shim_root)


# Runs `python -m ganforge ARGS` from the shim. The editable install's finder (setuptools' __editable__ ... finder
# on sys.meta_path) answers for any ganforge.* module the path search misses, and the working directory (sys.path's
# first entry) may hold a ganforge/ without engine/: so the shim goes first, the editable finder is dropped, and
# ganforge.engine must resolve inside the shim, or the run stops before measuring the wrong code.
BOOTSTRAP = """\
import importlib.util, os, runpy, sys
shim = sys.argv[1]
sys.path.insert(0, shim)
def editable(hook):
    name = getattr(hook, "__module__", None) or ""
    return "__editable__" in name and "ganforge" in name
sys.meta_path[:] = [finder for finder in sys.meta_path if not editable(finder)]
sys.path_hooks[:] = [hook for hook in sys.path_hooks if not editable(hook)]
sys.path_importer_cache.clear()
origin = importlib.util.find_spec("ganforge.engine").origin or ""
if not os.path.abspath(origin).startswith(os.path.join(shim, "ganforge", "")):
    sys.exit(f"bench bisect: ganforge.engine resolves to {origin}, not to the probed commit's code")
sys.argv = ["ganforge"] + sys.argv[2:]
runpy.run_module("ganforge", run_name="__main__", alter_sys=True)
"""


def run_ganforge_argv(shim, args):
    """The argv running `python -m ganforge ARGS` with this interpreter on the shim's code."""
    return [sys.executable, "-c", BOOTSTRAP, str(Path(shim).resolve()), *args]


class Checkout:
    """A probed commit's worktree (and its shim), its sha and subject."""

    def __init__(self, root, sha, scratch, stack):
        self.sha, self.subject = sha, subject(root, sha)
        self.tree = stack.enter_context(worktree(root, sha, scratch))
        self.shim = None
        self.scratch = Path(scratch)

    def ganforge_argv(self, args):
        if self.shim is None:
            self.shim = build_shim(self.tree, tempfile.mkdtemp(prefix=f"shim-{self.sha[:12]}-", dir=self.scratch))
        return run_ganforge_argv(self.shim, args)


def run_measurement(checkout, command, out, env_extra=None):
    """Run ``command`` (an argv list, or a shell string) in the checkout's worktree; the JSON it wrote to ``out``.
    A failure is a BisectError with the command's last output line."""
    env = dict(os.environ, **(env_extra or {}))
    shell = isinstance(command, str)
    done = subprocess.run(command, cwd=checkout.tree, shell=shell, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise BisectError(f"the measurement failed on {checkout.sha[:12]} (exit {done.returncode}): "
                          f"{lines[-1] if lines else 'no output'}")
    try:
        return json.loads(Path(out).read_text())
    except (OSError, ValueError) as exc:
        raise BisectError(f"the measurement on {checkout.sha[:12]} wrote no readable JSON to {out}: {exc}") from None


# --- measurements ------------------------------------------------------------------------------------------------

def settled(sides):
    """Whether at least three in four rounds (of their bad/good sides) agree."""
    majority = max(sides.count(True), sides.count(False))
    return 4 * majority >= 3 * len(sides)


def worse_by(value, reference, lower_is_better):
    """How much worse ``value`` is than ``reference``, as bench compare counts a slowdown (0.25: 25% slower)."""
    return value / reference - 1 if lower_is_better else reference / value - 1


def select_figure(results, filters):
    """The one tracked figure's key matching the filters ({"name", "column", "objective", "batch"}: None = any).
    A training row matches on its name, column, objective and batch size; a kernel row on its op (--name) and
    impl (--column)."""
    fields = {"train": {"name": "name", "objective": "objective", "batch": "batch_size", "column": "column"},
              "kernel": {"name": "op", "column": "impl"}}
    wanted = {field: value for field, value in filters.items() if value is not None}
    keys = []
    for key in tracked_figures(results):
        named, names = key_fields(key), fields[key[0]]
        if all(field in names and str(named[names[field]]) == str(value) for field, value in wanted.items()):
            keys.append(key)
    if len(keys) != 1:
        labels = [figure_label(key) for key in (keys or tracked_figures(results))]
        what = "no row matches" if not keys else f"{len(keys)} rows match"
        raise BisectError(f"{what} the filters {wanted}; pick one with --name/--column/--objective/--batch "
                          f"from: {'; '.join(labels[:12])}{' ...' if len(labels) > 12 else ''}")
    return keys[0]


class Timed:
    """One figure of a results JSON, measured alternately on GOOD and the probe; bad beyond the threshold."""

    kind = "timed"

    def __init__(self, args, threshold, scratch):
        self.args, self.threshold, self.scratch = args, threshold, Path(scratch)
        self.rounds = args.rounds
        self.max_rounds = max(args.rounds, args.max_rounds if args.max_rounds is not None else 3 * args.rounds)
        self.filters = {"name": args.name, "column": args.column, "objective": args.objective, "batch": args.batch}
        self.key = None
        self.runs = 0

    def describe(self):
        case = f"python -m ganforge bench {self.args.measured_case} {self.args.case_args}".strip()
        what = self.args.command or case
        return {"kind": "command" if self.args.command else "timed", "command": what, "rounds": self.rounds,
                "max_rounds": self.max_rounds,
                "figure": figure_label(self.key) if self.key else None, "filters": self.filters}

    def case_argv(self, out):
        argv = ["bench", self.args.measured_case, "--out", str(out), "--history", "off",
                *shlex.split(self.args.case_args)]
        for flag, value in (("--device", self.args.device), ("--repeats", self.args.repeats)):
            if value is not None:
                argv += [flag, str(value)]
        return argv + (["--quick"] if self.args.quick else [])

    def measure(self, checkout):
        """The selected figure of one run on ``checkout``: (value, lower_is_better)."""
        self.runs += 1
        out = self.scratch / f"run-{self.runs}.json"
        env = {"GANFORGE_HISTORY": str(self.scratch / "history.sqlite")}  # never the user's history
        if self.args.command:
            results = run_measurement(checkout, self.args.command.replace("{out}", shlex.quote(str(out))), out, env)
        else:
            results = self.run_case(checkout, out, env)
        figures = tracked_figures(results)
        if self.key is None:
            self.key = select_figure(results, self.filters)
        if self.key not in figures:
            raise BisectError(f"{checkout.sha[:12]}: its results have no row {figure_label(self.key)}")
        value, _, lower_is_better = figures[self.key]
        return value, lower_is_better

    def run_case(self, checkout, out, env):
        try:
            return run_measurement(checkout, checkout.ganforge_argv(self.case_argv(out)), out, env)
        except BisectError as exc:  # a command layer older than the harness has no --history flag
            if "--history" not in str(exc):
                raise
            argv = [arg for arg in self.case_argv(out) if arg not in ("--history", "off")]
            return run_measurement(checkout, checkout.ganforge_argv(argv), out, env)

    def start(self, good):
        self.good = good

    def judge(self, checkout, label):
        """Rounds of (GOOD, probe); the probe's ratio to GOOD is the median of the rounds' ratios. While fewer than
        three in four rounds fall on the median's side of the threshold, rounds are added, up to --max-rounds:
        on a busy machine one round's noise can be as large as the change."""
        good_values, probe_values, sides = [], [], []
        while len(sides) < self.rounds or (not settled(sides) and len(sides) < self.max_rounds):
            round_ = len(sides) + 1
            extra = "" if round_ <= self.rounds else f" (extra: the rounds disagree; at most {self.max_rounds})"
            for values, who in ((good_values, self.good), (probe_values, checkout)):
                progress(f"{label} {checkout.sha[:12]} round {round_}/{self.rounds}{extra}: measuring "
                         f"{'good ' if who is self.good else ''}{who.sha[:12]}")
                value, lower_is_better = self.measure(who)
                values.append(value)
            if not good_values[-1]:
                raise BisectError(f"the good commit {self.good.sha[:12]} has no figure {figure_label(self.key)}")
            if not probe_values[-1]:  # a row that errored or was skipped is worse than slow (as in bench compare)
                return {"figures": {"good": good_values, "probe": probe_values}, "ratio": None, "worse_by": None,
                        "verdict": "bad"}
            sides.append(worse_by(probe_values[-1] / good_values[-1], 1.0, lower_is_better) > self.threshold)
        ratios = [p / g for g, p in zip(good_values, probe_values)]
        ratio = statistics.median(ratios)
        slower = worse_by(ratio, 1.0, lower_is_better)
        verdict_bad = slower > self.threshold
        return {"figures": {"good": good_values, "probe": probe_values, "ratios": ratios}, "ratio": ratio,
                "worse_by": slower, "verdict": "bad" if verdict_bad else "good",
                "rounds_agreeing": sum(side == verdict_bad for side in sides), "rounds_agree": len(set(sides)) == 1}

    def shown(self, probe):
        spec = ".4g" if self.key and self.key[0] == "kernel" else ",.1f"
        figures = probe["figures"]
        return [" / ".join("–" if v is None else format(v, spec) for v in figures[side])
                for side in ("good", "probe")]


class Counts:
    """`ganforge bench counts` on GOOD once and on each probe; bad when any count of any step rose."""

    kind = "counts"

    def __init__(self, args, scratch):
        self.args, self.scratch = args, Path(scratch)
        self.runs = 0

    def describe(self):
        return {"kind": "counts", "command": "python -m ganforge bench counts"}

    def measure(self, checkout):
        self.runs += 1
        out = self.scratch / f"counts-{self.runs}.json"
        argv = ["bench", "counts", "--out", str(out)]
        if self.args.device:
            argv += ["--device", self.args.device]
        return run_measurement(checkout, checkout.ganforge_argv(argv), out)["steps"]

    def start(self, good):
        progress(f"good {good.sha[:12]}: counting")
        self.good_steps = self.measure(good)
        return self.good_rises_over_its_baseline(good)

    def good_rises_over_its_baseline(self, good):
        """GOOD's counts that rose above its own bench/counts_baseline.json (when written with this torch)."""
        from .counts import compare_counts, torch_major_minor

        path = good.tree / "bench" / "counts_baseline.json"
        if not path.is_file():
            return []
        baseline = json.loads(path.read_text())
        if baseline.get("torch_major_minor") != torch_major_minor():
            return []
        return compare_counts(baseline["steps"], self.good_steps)[0]

    def judge(self, checkout, label):
        from .counts import compare_counts

        progress(f"{label} {checkout.sha[:12]}: counting")
        steps = self.measure(checkout)
        rises, falls = compare_counts(self.good_steps, steps)
        good_ops, probe_ops = (sum(step["ops"] for step in table.values()) for table in (self.good_steps, steps))
        return {"figures": {"good_ops": good_ops, "probe_ops": probe_ops, "rises": rises, "falls": falls},
                "ratio": probe_ops / good_ops if good_ops else None, "worse_by": None,
                "verdict": "bad" if rises else "good"}

    def shown(self, probe):
        figures = probe["figures"]
        rose = f" ({len(figures['rises'])} step(s) rose)" if figures["rises"] else ""
        return [f"{figures['good_ops']:,} ops", f"{figures['probe_ops']:,} ops{rose}"]


# --- the search --------------------------------------------------------------------------------------------------

def probe_entry(checkout, role, judged):
    return {"sha": checkout.sha, "subject": checkout.subject, "role": role, **judged}


def judge_commit(root, sha, role, measurement, scratch, label):
    """Check out ``sha`` in a worktree of its own, judge it, remove the worktree; its probe entry."""
    with ExitStack() as stack:
        checkout = Checkout(root, sha, scratch, stack)
        judged = measurement.judge(checkout, label)
    return probe_entry(checkout, role, judged)


def check_endpoints(root, bad, measurement, good, scratch, probes):
    """None when the endpoints bracket a change (GOOD good, BAD bad), else why not, in one line."""
    rises = measurement.start(good)
    if rises:
        return (f"the good revision {good.sha[:12]} already measures bad: its counts rose above its own "
                f"bench/counts_baseline.json ({len(rises)} step(s), first: {rises[0]})")
    probes.append(judge_commit(root, bad, "bad endpoint", measurement, scratch, "bad endpoint"))
    if probes[-1]["verdict"] != "bad":
        worse = probes[-1]["worse_by"]
        how = f"{worse:+.1%} against good" if worse is not None else "no count rose above good's"
        return f"the bad revision {bad[:12]} does not measure bad ({how})"
    return None


def search(root, line, measurement, scratch, probes):
    """Binary search of ``line`` (its last commit known bad, the commit before it good): its first bad commit."""
    good_index, bad_index = -1, len(line) - 1
    while bad_index - good_index > 1:
        middle = (good_index + bad_index) // 2
        label = f"probe {len(probes)} ({bad_index - good_index - 1} commit(s) left)"
        probes.append(judge_commit(root, line[middle], "probe", measurement, scratch, label))
        if probes[-1]["verdict"] == "bad":
            bad_index = middle
        else:
            good_index = middle
    return line[bad_index]


# --- the report --------------------------------------------------------------------------------------------------

def format_report(report, measurement):
    """The probes' table, what rose at the first bad commit (counts), and the answer as the last line."""
    rows = []
    for probe in report["probes"]:
        good_text, probe_text = measurement.shown(probe)
        ratio, worse = probe["ratio"], probe["worse_by"]
        subject_text = probe["subject"] if len(probe["subject"]) <= SUBJECT_WIDTH else \
            probe["subject"][:SUBJECT_WIDTH - 3] + "..."
        rounds = probe["figures"].get("ratios") or []
        ratio_text = "–" if ratio is None else f"{ratio:.3f}"
        if len(rounds) > 1:  # each round's ratio beside their median
            ratio_text += " (" + " / ".join(f"{r:.2f}" for r in rounds) + ")"
        verdict = probe["verdict"]
        if not probe.get("rounds_agree", True):
            verdict += f" ({probe['rounds_agreeing']} of {len(rounds)} rounds)"
        rows.append([probe["sha"][:12], subject_text, probe["role"], good_text, probe_text,
                     ratio_text, "–" if worse is None else f"{worse:+.1%}", verdict])
    headers = ["commit", "subject", "probe", "good", "this commit", "ratio", "slower by", "verdict"]
    what = report["measurement"]
    lines = [f"bisect: {what['command']}" + (f" · {what['figure']}" if what.get("figure") else ""),
             f"good {report['good'][:12]} · bad {report['bad'][:12]} · {report['commits']} commit(s) on the "
             f"first-parent line" + (f" · threshold {report['threshold']:.0%}" if what["kind"] != "counts" else ""),
             "", markdown_table(headers, rows, "lllrrrrl"), ""]
    first = next((p for p in report["probes"] if p["sha"] == report["first_bad"]), None)
    if first is not None and first["figures"].get("rises"):
        lines += [f"counts that rose at {first['sha'][:12]}:"] + [f"  {rise}" for rise in first["figures"]["rises"]]
    return "\n".join(lines)


def bisect(args):
    try:
        threshold = parse_threshold(args.threshold)
    except ValueError as exc:
        raise BisectError(str(exc)) from None
    if args.rounds < 1:
        raise BisectError(f"--rounds must be >= 1, got {args.rounds}")
    root = checkout_root(args.repo)
    good, bad = resolve(root, args.good), resolve(root, args.bad)
    line = first_parent_line(root, good, bad)
    progress(f"{len(line)} commit(s) after good {good[:12]} up to bad {bad[:12]}")
    probes = []
    with tempfile.TemporaryDirectory(prefix="ganforge-bisect-") as scratch, ExitStack() as stack:
        measurement = Counts(args, scratch) if args.counts else Timed(args, threshold, scratch)
        good_checkout = Checkout(root, good, scratch, stack)
        reason = check_endpoints(root, bad, measurement, good_checkout, scratch, probes)
        first_bad = None if reason else search(root, line, measurement, scratch, probes)
    report = {"schema": SCHEMA, "command": command_line(),
              "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "good": good, "bad": bad,
              "first_bad": first_bad, "commits": len(line), "threshold": threshold,
              "measurement": measurement.describe(), "probes": probes, "endpoints_problem": reason}
    return finish(args, report, measurement)


def finish(args, report, measurement):
    from ..engine.io import atomic_write_json

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/bench/bisect-{stamp}.json")
    atomic_write_json(out, report, indent=1)
    print(format_report(report, measurement))
    print(f"bisect written to {out}")
    if report["first_bad"] is None:
        print(f"not bisected: {report['endpoints_problem']}")
        return 2
    print(f"first bad commit: {report['first_bad']}")
    return 0
