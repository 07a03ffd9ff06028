"""bench.harness: one entry (`ganforge bench NAME`) for every case, the shared options parsed once, thin case
modules without parsers or `python -m` entries of their own."""
import ast
import importlib
from pathlib import Path

import pytest

from ganforge.bench import harness

BENCH = Path(__file__).resolve().parents[1] / "bench"


def shipped_bench_modules():
    """The bench package's modules, the folders that are not shipped (studies, pytest-benchmark files) left out."""
    return sorted(p for p in BENCH.glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("case", harness.CASES, ids=lambda c: c.name)
def test_every_case_has_a_module_with_the_two_functions(case):
    module = importlib.import_module(f"ganforge.bench.{case.module}")
    assert callable(module.add_arguments) and callable(module.run)


@pytest.mark.parametrize("case", harness.CASES, ids=lambda c: c.name)
def test_every_case_answers_help_with_the_shared_options(case, capsys):
    with pytest.raises(SystemExit) as stop:
        harness.main([case.name, "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert f"ganforge bench {case.name}" in text
    for flag in ("--device", "--out", "--repeats", "--quick", "--history"):
        assert flag in text, (case.name, flag)


def test_no_shipped_bench_module_parses_its_own_command_line():
    """One parser: only the harness builds an ArgumentParser, and no module runs as `python -m` on its own."""
    found = []
    for path in shipped_bench_modules():
        if path.name == "harness.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "ArgumentParser":
                found.append(f"{path.name}:{node.lineno} ArgumentParser")
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "__name__":
                found.append(f"{path.name}:{node.lineno} __main__ entry")
    assert not found, found


def test_the_case_list_and_the_errors(capsys):
    assert harness.main([]) == 2 and "cases:" in capsys.readouterr().out
    assert harness.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(case.name in text for case in harness.CASES)
    with pytest.raises(ValueError, match="unknown bench case 'nope'"):
        harness.main(["nope"])
    with pytest.raises(SystemExit):  # --repeats must be a positive count
        harness.main(["train", "--repeats", "0"])
    assert "must be >= 1" in capsys.readouterr().err


def test_the_command_line_reaches_the_harness(capsys):
    from ganforge.cli import main as cli_main

    assert cli_main(["bench"]) == 2 and "cases:" in capsys.readouterr().out
    assert cli_main(["bench", "nope"]) == 2  # a bad name is one line on stderr, exit 2
    assert "unknown bench case" in capsys.readouterr().err
