"""Imports only point down the layers (README's Layout section, DESIGN.md's picture).

Every module of the package is read (its source, not imported), every import in it resolved to a ganforge
module, lazy imports inside functions included, and each checked against the layer order:

    commands  ->  bench, applications  ->  the loop  ->  engine base  ->  models  ->  kernels

Inside the engine base, the configuration sits above the data and augmentation it validates, sampling beside the
checkpoints it loads, and the metrics above both. Nothing imports tests/, no package reaches into another's
private modules, and bench and the applications do not import each other.
"""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"ganforge": "ganforge", "engine": "ganforge.engine", "kernels": "ganforge.kernels",
           "models": "ganforge.models", "bench": "ganforge.bench"}

# (layer rank, module prefixes); the longest matching prefix decides a module's layer
LAYERS = [
    (0, ("ganforge.kernels",)),
    (1, ("ganforge.models",)),
    (2, ("ganforge.engine.io", "ganforge.engine.provenance", "ganforge.engine.distributed", "ganforge.engine.images",
         "ganforge.engine.rundir", "ganforge.engine.signals")),
    (3, ("ganforge.engine.data", "ganforge.engine.augment", "ganforge.engine.runlog", "ganforge.engine.tensorboard")),
    (4, ("ganforge.engine.config", "ganforge.engine.recipes")),
    (5, ("ganforge.engine.losses", "ganforge.engine.checkpoint", "ganforge.engine.sampling")),
    (6, ("ganforge.engine.metrics",)),
    (7, ("ganforge.engine.steps", "ganforge.engine.train_state", "ganforge.engine.graphs", "ganforge.engine.devices",
         "ganforge.engine.session", "ganforge.engine.schedule", "ganforge.engine.outputs", "ganforge.engine.resume",
         "ganforge.engine.stopping", "ganforge.engine.loop", "ganforge.engine.trainer", "ganforge.engine.api",
         "ganforge.engine")),
    (8, ("ganforge.engine.apps", "ganforge.bench")),
    (9, ("ganforge.commands", "ganforge.cli", "ganforge.__main__", "ganforge")),
]


def layer_of(module):
    best = None
    for rank, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[1])):
                best = (rank, prefix)
    return best


def package_modules():
    """(dotted module name, is a package __init__, path) of every module shipped in the package."""
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if {"benchmarks", "studies"} & set(rel.parts):  # pytest-benchmark files and studies: not shipped
                continue
            yield ".".join([package, *parts]), path.name == "__init__.py", path


def imports_of(module, is_package, path):
    """Every ganforge module (or name in one) that the file imports, with its line."""
    package = module if is_package else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            yield target, node.lineno
            for alias in node.names:  # `from . import losses` imports the module ganforge.engine.losses
                yield f"{target}.{alias.name}", node.lineno


def violations():
    found = []
    known = {m for m, _, _ in package_modules()}
    for module, is_package, path in package_modules():
        here = layer_of(module)
        for target, line in imports_of(module, is_package, path):
            shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
            where = f"{shown}:{line} imports {target}"
            if target.split(".")[0] in ("tests", "conftest"):
                found.append(f"{where}: nothing imports tests/")
            if not target.startswith("ganforge") or target == module or module.startswith(target + "."):
                continue  # outside the package, itself, or an enclosing package (Python imports those anyway)
            if target not in known and target.rsplit(".", 1)[0] in known:
                continue  # a name inside a module already checked as that module
            owner, _, leaf = target.rpartition(".")
            if leaf.startswith("_") and not leaf.startswith("__") and not module.startswith(owner):
                found.append(f"{where}: a private module of another package")
            there = layer_of(target)
            if there is None or here is None:
                continue
            if there[0] > here[0]:
                found.append(f"{where}: points up (layer {here[1]} -> {there[1]})")
            elif there[0] == here[0] == 8 and there[1] != here[1]:
                found.append(f"{where}: bench and the applications do not import each other")
    return found


def test_every_module_is_in_a_layer():
    unplaced = [m for m, _, _ in package_modules() if layer_of(m) is None]
    assert not unplaced


def test_imports_only_point_down():
    assert violations() == []


@pytest.mark.parametrize("module,target", [
    ("ganforge.engine.config", "ganforge.engine.trainer"),
    ("ganforge.engine.steps", "ganforge.bench.report"),
    ("ganforge.kernels.bias_act", "ganforge.models.layers"),
    ("ganforge.engine.metrics.fid", "ganforge.engine.steps"),
    ("ganforge.engine.checkpoint", "ganforge.engine.train_state"),
])
def test_an_upward_import_is_caught(tmp_path, monkeypatch, module, target):
    """The checker itself: one upward import planted in a copy of a module is reported."""
    for mod, is_package, path in list(package_modules()):
        if mod == module:
            planted = tmp_path / path.name
            planted.write_text(path.read_text() + f"\n\ndef _planted():\n    import {target}\n")
            originals = package_modules

            def with_planted():
                for m, p, f in originals():
                    yield (m, p, planted if m == module else f)
            monkeypatch.setattr(sys.modules[__name__], "package_modules", with_planted)
            break
    else:
        pytest.fail(f"{module} not found")
    found = violations()
    assert len(found) == 1 and "points up" in found[0] and target in found[0], found
