"""The committed records (bench/results/<date>_<slug>/) and their generated index (docs/results.md).

The first tests read the repository itself: every record has its README in the one form, and the committed index
is exactly what `ganforge bench records` writes now. The others build small record trees in a temporary folder
and check that the generator and its check catch what is wrong.
"""
import re
from pathlib import Path

import pytest

from ganforge.bench import records
from ganforge.bench.harness import main as bench_main

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
HEADINGS = ["Claim", "Command", "Commit", "Machine", "Versions", "Date", "Figures"]
OPTIONAL = ["Files", "Notes"]


def record_folders():
    return sorted(path for path in RESULTS.iterdir() if path.is_dir())


def headings_of(text):
    """The "## " headings of a markdown file, outside ``` fences."""
    found, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("## "):
            found.append(line[3:].strip())
    return found


def section(text, heading):
    """The first non-empty line after '## heading'."""
    lines = text.splitlines()
    start = lines.index(f"## {heading}") + 1
    return next(line for line in lines[start:] if line.strip())


# -- the committed records -----------------------------------------------------------------------------------------

def test_there_are_records():
    assert len(record_folders()) >= 10


@pytest.mark.parametrize("folder", record_folders(), ids=lambda p: p.name)
def test_record_readme_has_every_heading_in_order(folder):
    readme = folder / "README.md"
    assert readme.is_file(), f"{folder.name} has no README.md"
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# "), f"{folder.name}/README.md does not open with a title"
    found = headings_of(text)
    assert found[:len(HEADINGS)] == HEADINGS, f"{folder.name}: {found}"
    rest = found[len(HEADINGS):]
    assert rest == [name for name in OPTIONAL if name in rest], f"{folder.name}: {found}"


@pytest.mark.parametrize("folder", record_folders(), ids=lambda p: p.name)
def test_record_date_matches_its_folder_and_commit_is_a_sha(folder):
    match = re.fullmatch(r"(\d{4}-\d{2}-\d{2})_[a-z0-9]+(-[a-z0-9]+)*", folder.name)
    assert match, f"{folder.name} is not <YYYY-MM-DD>_<slug>"
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert section(text, "Date").startswith(match.group(1))
    assert re.match(r"`?[0-9a-f]{7,40}`?(\s|$)", section(text, "Commit")), section(text, "Commit")


@pytest.mark.parametrize("folder", record_folders(), ids=lambda p: p.name)
def test_record_holds_raw_files_beside_its_readme(folder):
    files = [path for path in folder.rglob("*") if path.is_file() and path.name != "README.md"]
    assert files, f"{folder.name} holds no raw files"


def test_no_loose_files_in_results():
    loose = [path.name for path in RESULTS.iterdir() if path.is_file() and path.name != "README.md"]
    assert loose == []


def test_committed_index_is_what_the_generator_makes():
    found, problems = records.read_records(ROOT)
    assert problems == []
    committed = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    assert committed == records.render_index(found), "docs/results.md is stale: run `ganforge bench records`"
    assert records.check(ROOT) == []


def test_index_links_every_record_newest_first():
    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(\.\./bench/results/([^/)]+)/\)", text)
    assert sorted(links) == [path.name for path in record_folders()]
    dates = [name[:10] for name in links]
    assert dates == sorted(dates, reverse=True)


# -- the generator and its check, on small trees --------------------------------------------------------------------

def write_record(root, folder, date=None, commit="abc1234", order=None, claim="It is fast."):
    """A record folder with a README in the one form (or the headings in `order`) and one raw file."""
    body = {"Claim": claim, "Command": "```sh\n# a comment, not a heading\nganforge train\n```",
            "Commit": f"`{commit}` (recorded)", "Machine": "a CPU", "Versions": "torch 2.13",
            "Date": date or folder[:10], "Figures": "| a |\n|---|\n| 1 |", "Notes": "- none"}
    names = order or HEADINGS + ["Notes"]
    text = f"# Title of {folder}\n\n" + "".join(f"## {name}\n\n{body.get(name, 'text')}\n\n" for name in names)
    path = root / "bench" / "results" / folder
    path.mkdir(parents=True)
    (path / "README.md").write_text(text, encoding="utf-8")
    (path / "raw.json").write_text("{}\n", encoding="utf-8")


@pytest.fixture
def tree(tmp_path):
    write_record(tmp_path, "2026-01-02_later-cpu", claim="Later | with a pipe.")
    write_record(tmp_path, "2026-01-01_earlier-cpu")
    return tmp_path


def test_write_then_check_agree(tree):
    assert bench_main(["records", "--root", str(tree)]) == 0
    text = (tree / "docs" / "results.md").read_text(encoding="utf-8")
    assert text.index("2026-01-02_later-cpu") < text.index("2026-01-01_earlier-cpu")
    assert "Later \\| with a pipe." in text
    assert "](../bench/results/2026-01-01_earlier-cpu/)" in text
    assert bench_main(["records", "--check", "--root", str(tree)]) == 0


def test_check_names_a_stale_index(tree, capsys):
    bench_main(["records", "--root", str(tree)])
    write_record(tree, "2026-01-03_newest-cpu")
    capsys.readouterr()
    assert bench_main(["records", "--check", "--root", str(tree)]) == 1
    out = capsys.readouterr().out
    assert "docs/results.md differs" in out and "2026-01-03_newest-cpu" in out


def test_check_reports_a_missing_index(tree):
    assert any("docs/results.md is missing" in line for line in records.check(tree))


@pytest.mark.parametrize("kwargs, expected", [
    ({"order": ["Claim", "Commit", "Command", "Machine", "Versions", "Date", "Figures"]}, "out of order"),
    ({"order": ["Claim", "Command", "Commit", "Machine", "Date", "Figures"]}, "missing section 'Versions'"),
    ({"order": HEADINGS + ["Results"]}, "unknown section 'Results'"),
    ({"date": "2026-01-05"}, "the Date section says 2026-01-05"),
    ({"commit": "not-a-sha"}, "hex commit sha"),
])
def test_malformed_records_are_named_and_block_the_index(tree, kwargs, expected):
    write_record(tree, "2026-01-04_broken-cpu", **kwargs)
    problems = records.check(tree)
    assert any("2026-01-04_broken-cpu" in line and expected in line for line in problems), problems
    path, problems = records.write_index(tree)
    assert path is None and problems
    assert not (tree / "docs" / "results.md").exists()


def test_loose_files_and_badly_named_folders_are_reported(tree):
    (tree / "bench" / "results" / "old-result.json").write_text("{}\n")
    write_record(tree, "2026-01-05_Bad_Name")
    problems = records.check(tree)
    assert any("old-result.json" in line and "loose file" in line for line in problems)
    assert any("2026-01-05_Bad_Name" in line and "folder name" in line for line in problems)


def test_the_command_layer_dispatches_records(tree):
    from ganforge.commands.bench import bench_command

    assert bench_command(["records", "--root", str(tree)]) == 0
    assert bench_command(["records", "--check", "--root", str(tree)]) == 0


def test_no_results_folder_is_an_error(tmp_path, capsys):
    assert bench_main(["records", "--check", "--root", str(tmp_path)]) == 2
    assert "bench/results" in capsys.readouterr().err
