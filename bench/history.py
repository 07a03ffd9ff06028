"""A history of bench figures across commits: one SQLite table, standard library only.

    ganforge bench history rebuild DIR [--history DB]     (a fresh database from every results file under DIR)
    ganforge bench history [--history DB] [--case C] [--model M] [--column COL] [--objective O] [--commit SHA]
    ganforge bench history backfill --commits A,B,C --out DIR [--rounds 2] [--bench-case train] [--case-args "..."]
        (the bench case run at each commit, in a temporary worktree with this environment; files kept in DIR)

Each row is one figure of one results file ("ganforge-bench/1"): a kernel row's median time (ms) or a training
row's images/s, keyed by (case, model, objective, column, batch, shape, dtype), with the file's commit, machine
(its "device" field), torch and triton versions and date, and the p20 / p80 of the repeats beside the median
(the band `ganforge bench report` draws; empty for rows written without them). Default database:
$GANFORGE_HISTORY, else $GANFORGE_CACHE/bench-history.sqlite, else ~/.cache/ganforge/bench-history.sqlite.
"""
import json
import os
import sqlite3
import subprocess
from pathlib import Path

from .results import SCHEMA

KEY = ("case_name", "model", "objective", "column_name", "batch", "shape", "dtype")
COLUMNS = KEY + ("git_commit", "machine", "torch", "triton", "date", "figure", "value", "unit", "p20", "p80")
KNOWN_SECTIONS = ("kernels", "train")
_REAL = ("value", "p20", "p80")


def _sql_type(column):
    return "REAL" if column in _REAL else "INTEGER" if column == "batch" else "TEXT"


_CREATE = ("CREATE TABLE IF NOT EXISTS figures (id INTEGER PRIMARY KEY AUTOINCREMENT, "
           + ", ".join(f"{c} {_sql_type(c)}" for c in COLUMNS) + ")")


def default_path():
    explicit = os.environ.get("GANFORGE_HISTORY")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("GANFORGE_CACHE")
    return Path(cache or Path.home() / ".cache" / "ganforge") / "bench-history.sqlite"


def connect(db_path=None):
    path = Path(db_path) if db_path else default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(str(path))
    con.execute(_CREATE)
    _add_missing_columns(con)
    return con


def _add_missing_columns(con):
    """A database written before a column existed (p20 / p80) gets it, empty, instead of failing every insert."""
    present = {row[1] for row in con.execute("PRAGMA table_info(figures)")}
    with con:
        for column in COLUMNS:
            if column not in present:
                con.execute(f"ALTER TABLE figures ADD COLUMN {column} {_sql_type(column)}")


def _shape(value):
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return "" if value is None else str(value)


def _kernel_key(row):
    return {"case_name": f"kernel/{row['op']}/{row['pass']}", "model": "", "objective": "",
            "column_name": str(row["impl"]), "batch": int(row["numel"]), "shape": _shape(row.get("shape")),
            "dtype": str(row.get("dtype") or "")}, ("median_ms", "ms", "p20_ms", "p80_ms")


# (loss, penalty) -> the bench's objective name, for rows written before rows named their objective
_OLD_OBJECTIVES = {("ns", "none"): "none", ("wgan", "wgan-gp"): "wgan-gp", ("ns", "r1"): "r1",
                   ("rpgan", "r1+r2"): "rpgan-r1r2"}


def _train_key(row):
    loss_penalty = (row.get("loss"), row.get("penalty"))
    objective = row.get("objective")
    if not objective and row.get("penalty_every") in (None, 1):
        objective = _OLD_OBJECTIVES.get(loss_penalty)
    objective = objective or "+".join(str(v) for v in loss_penalty)
    return {"case_name": str(row["name"]), "model": str(row["model"]), "objective": str(objective),
            "column_name": str(row["column"]), "batch": int(row["batch_size"]),
            "shape": _shape(row.get("data_shape")), "dtype": str(row.get("precision") or "")}, \
        ("images_per_sec", "images/s", "images_per_sec_p20", "images_per_sec_p80")


_KEYERS = {"kernels": _kernel_key, "train": _train_key}


def _number_or_none(value):
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _key(case, column, batch=0, model="", objective="", shape="", dtype=""):
    return {"case_name": case, "model": str(model or ""), "objective": str(objective or ""),
            "column_name": str(column), "batch": int(batch or 0), "shape": shape, "dtype": dtype}


def _bench_entries(results):
    """(key, row, (figure, unit, p20 field, p80 field)) per kernel and training row of a bench results file."""
    for section, entries in results.items():
        keyer = _KEYERS.get(section)
        for row in entries if isinstance(entries, list) and section != "notes" else ():
            if keyer is None or not isinstance(row, dict):
                yield None
                continue
            try:
                key, fields = keyer(row)
            except (KeyError, TypeError, ValueError):
                yield None
                continue
            yield key, row, fields


def _penalty_cost_entries(results):
    for row in results.get("rows") or []:
        yield (_key("penalty-cost", row["column"], results.get("batch_size"), results.get("model"),
                    row.get("penalty"), dtype=str(row.get("precision") or "")),
               row, ("ms_per_d_step", "ms", "ms_per_d_step_p20", "ms_per_d_step_p80"))


def _scaling_entries(results):
    for row in results.get("rows") or []:
        yield (_key("scaling", f"{row['launch']} x{row['nproc']}", row.get("batch_per_rank"),
                    dtype=str(row.get("precision") or "")), row, ("images_per_sec", "images/s", None, None))


def _quality_entries(results):
    for curve in results.get("curves") or []:
        for point in curve.get("points") or []:
            yield (_key("quality", f"FID at {point['mark_s']} s", model=curve["name"], objective=curve.get("kind")),
                   point, ("fid", "FID", None, None))


def _metrics_cost_entries(results):
    for row in results.get("rows") or []:
        for metric, seconds in (row.get("metric_seconds") or {}).items():
            yield _key("metrics-cost", metric, row.get("samples")), {"seconds": seconds}, ("seconds", "s", None, None)


# schema -> the figures of one results file of that kind, (key, row, (figure, unit, p20 field, p80 field)) or None
ENTRIES = {SCHEMA: _bench_entries, "ganforge-penalty-cost/1": _penalty_cost_entries,
           "ganforge-scaling/1": _scaling_entries, "ganforge-quality/1": _quality_entries,
           "ganforge-metrics-cost/1": _metrics_cost_entries}
LOWER_IS_BETTER = ("ms", "s", "FID")  # units whose figure improves as it falls


def figure_rows(results):
    """(rows, skipped): one dict per figure of ``results``; skipped counts rows of unknown kinds or without a figure.
    A file of a kind the history does not know (ENTRIES) adds nothing."""
    header = {"git_commit": results.get("git_commit") or "", "machine": str(results.get("device") or ""),
              "torch": str(results.get("torch") or ""), "triton": str(results.get("triton") or ""),
              "date": str(results.get("date") or "")}
    entries = ENTRIES.get(results.get("schema"), _bench_entries)
    rows, skipped = [], 0
    for entry in entries(results):
        value = None if entry is None else _number_or_none(entry[1].get(entry[2][0]))
        if value is None:
            skipped += 1  # an unknown kind, or a skipped or failed row: no figure to keep
            continue
        key, row, (figure, unit, low, high) = entry
        rows.append({**key, **header, "figure": figure, "value": value, "unit": unit,
                     "p20": _number_or_none(row.get(low)) if low else None,
                     "p80": _number_or_none(row.get(high)) if high else None})
    return rows, skipped


def record(db_path, results, con=None):
    """Append every figure of one results dict to the database; return (rows added, rows skipped)."""
    rows, skipped = figure_rows(results)
    own = con is None
    con = connect(db_path) if own else con
    try:
        with con:
            con.executemany(f"INSERT INTO figures ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                            [tuple(r[c] for c in COLUMNS) for r in rows])
    finally:
        if own:
            con.close()
    return len(rows), skipped


def record_quietly(results, db_path=None):
    """record() for the bench commands: a failure prints one warning line and never raises."""
    try:
        record(db_path, results)
    except Exception as exc:  # noqa: BLE001 - the history must never fail a bench run
        print(f"warning: bench history not updated ({default_path() if db_path is None else db_path}): {exc}")


def _results_files(folder):
    """(results dicts, files skipped) for every JSON under ``folder`` of a kind the history keeps (ENTRIES)."""
    found, skipped = [], 0
    for path in sorted(Path(folder).rglob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            skipped += 1
            continue
        if isinstance(data, dict) and data.get("schema") in ENTRIES:
            found.append(data)
        else:
            skipped += 1
    return found, skipped


def rebuild(db_path, folder):
    """A fresh database from every results file under ``folder``; return (files, rows, files skipped, rows skipped)."""
    path = Path(db_path) if db_path else default_path()
    if path.exists():
        path.unlink()
    found, files_skipped = _results_files(folder)
    con = connect(path)
    rows = rows_skipped = 0
    try:
        for results in found:
            added, skipped = record(path, results, con=con)
            rows, rows_skipped = rows + added, rows_skipped + skipped
    finally:
        con.close()
    return len(found), rows, files_skipped, rows_skipped


def query(db_path=None, case=None, model=None, column=None, commit=None, objective=None):
    """The selected rows as dicts, oldest first (date, then insertion order)."""
    where, args = [], []
    for name, value in (("case_name", case), ("model", model), ("column_name", column), ("objective", objective)):
        if value is not None:
            where.append(f"{name} = ?")
            args.append(value)
    if commit:
        where.append("git_commit LIKE ?")
        args.append(commit + "%")
    sql = f"SELECT {', '.join(COLUMNS)} FROM figures" + (" WHERE " + " AND ".join(where) if where else "") \
        + " ORDER BY date, id"
    con = connect(db_path)
    try:
        return [dict(zip(COLUMNS, r)) for r in con.execute(sql, args)]
    finally:
        con.close()


def markdown_table(rows):
    """The rows' figures over commits: one line per figure, its key beside the date, commit, machine and value."""
    lines = ["| date | commit | machine | case | model | objective | column | batch | shape | dtype | value |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['date']} | {(r['git_commit'] or '-')[:10]} | {r['machine']} | {r['case_name']} | "
                     f"{r['model'] or '-'} | {r['objective'] or '-'} | {r['column_name']} | {r['batch']} | "
                     f"{r['shape'] or '-'} | {r['dtype'] or '-'} | {r['value']:.4g} {r['unit']} |")
    return "\n".join(lines) + "\n"


def add_arguments(parser):
    """`ganforge bench history [show|rebuild] [DIR]` and the row selection (--history is a shared option)."""
    parser.description = ("Bench figures over commits from a SQLite history; `history rebuild DIR` makes a fresh "
                          "database from every results file under DIR.")
    parser.add_argument("action", nargs="?", choices=("show", "rebuild", "backfill"), default="show",
                        help="show the selected figures (default), rebuild the database from DIR, or backfill: "
                             "measure past commits")
    parser.add_argument("folder", nargs="?", help="rebuild: folder searched for results JSON files (bench/results)")
    parser.add_argument("--case", dest="row_case", help="a training row's name (dcgan-28) or kernel/OP/PASS")
    parser.add_argument("--model", help="model (mlp, dcgan)")
    parser.add_argument("--column", help="training column or kernel implementation")
    parser.add_argument("--objective", help="training objective (none, wgan-gp, r1, rpgan-r1r2, default)")
    parser.add_argument("--commit", help="a commit, or the start of one")
    backfill = parser.add_argument_group("backfill")
    backfill.add_argument("--commits", help="comma-separated revisions to measure (oldest first reads best)")
    backfill.add_argument("--bench-case", default="train", help="the bench case run at each commit (default train)")
    backfill.add_argument("--case-args", default="--quick --device cpu",
                          help='its flags as one string (default "--quick --device cpu")')
    backfill.add_argument("--rounds", type=int, default=1,
                          help="passes over the commits, each commit once per pass, so drift falls on all alike")


def run(args):
    """Rebuild the database from a folder, or print the selected figures over commits; returns the exit code."""
    if args.history == "off":
        print("ganforge bench history: error: --history off names no database to read or rebuild")
        return 2
    history = args.history
    if args.action == "rebuild":
        if not args.folder or not Path(args.folder).is_dir():
            print(f"ganforge bench history rebuild: error: {args.folder or 'DIR'} is not a folder")
            return 2
        files, rows, files_skipped, rows_skipped = rebuild(history, args.folder)
        print(f"loaded {files} results files, {rows} rows into {history or default_path()} "
              f"(skipped {files_skipped} other JSON files, {rows_skipped} rows without a figure or of unknown kind)")
        return 0
    if args.action == "backfill":
        return backfill(args)
    rows = query(history, args.row_case, args.model, args.column, args.commit, args.objective)
    if not rows:
        print("no rows match")
        return 0
    print(markdown_table(rows), end="")
    return 0


def backfill(args):
    """Run the bench case at each of --commits in a temporary worktree (this interpreter, that commit's code), the
    commits in turn for --rounds passes; each results file is kept under --out and recorded in the history."""
    import contextlib
    import shlex
    import tempfile

    from ..engine.io import atomic_write_json
    from .bisect import Checkout, git, resolve

    revisions = [r.strip() for r in (args.commits or "").split(",") if r.strip()]
    if not revisions or not args.out or args.rounds < 1:
        raise ValueError("history backfill needs --commits A,B,... , --out DIR and --rounds >= 1")
    root = Path(git(Path("."), "rev-parse", "--show-toplevel"))  # past commits: the work tree may be dirty
    shas = [resolve(root, rev) for rev in revisions]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="ganforge-backfill-"))
        checkouts = [Checkout(root, sha, scratch, stack) for sha in shas]
        # an older commit's bench appends to its own default history: a throwaway one, recorded here instead
        env = dict(os.environ, GANFORGE_HISTORY=str(Path(scratch) / "child-history.sqlite"))
        for round_index in range(args.rounds):
            for checkout in checkouts:
                path = (out / f"{args.bench_case}-{checkout.sha[:12]}-r{round_index + 1}.json").resolve()
                print(f"backfill: {checkout.sha[:12]} {checkout.subject[:60]} (round {round_index + 1})", flush=True)
                argv = checkout.ganforge_argv(["bench", args.bench_case, *shlex.split(args.case_args),
                                               "--out", str(path)])
                done = subprocess.run(argv, cwd=checkout.tree, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
                    raise ValueError(f"bench {args.bench_case} failed at {checkout.sha[:12]}: "
                                     f"{lines[-1] if lines else 'no output'}")
                results = json.loads(path.read_text())
                # the child ran in the worktree, so it was given an absolute --out: record the path as asked for
                shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
                results["command"] = str(results.get("command", "")).replace(str(path), str(shown))
                atomic_write_json(path, results, indent=1)
                if args.history != "off":
                    record(args.history, results)
    print(f"backfill: {len(shas)} commits x {args.rounds} rounds, results in {out}")
    return 0


def main(argv):
    """`ganforge bench history ...` through the bench harness; returns the exit code."""
    from .harness import main as harness_main

    return harness_main(["history", *argv])
