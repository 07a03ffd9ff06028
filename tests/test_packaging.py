"""The installed distribution provides one import name, `ganforge`, and nothing else."""
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    # the environment's own setuptools when it has one (fast, offline); else pip fetches one to build with
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q",
                             "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{result.stderr[-3000:]}")
    (path,) = out.glob("ganforge-*.whl")
    return path


@pytest.mark.slow
def test_wheel_holds_only_the_ganforge_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"ganforge"}
    for sub in ("engine", "kernels", "models", "bench"):
        assert f"ganforge/{sub}/__init__.py" in names
    assert "ganforge/engine/metrics/assets/mnist_classifier.pt" in names
    shipped_tests = [n for n in names if Path(n).name.startswith("test_") or Path(n).name == "conftest.py"]
    assert shipped_tests == []


@pytest.mark.slow
def test_installed_package_imports_as_ganforge_only(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("TRITON_INTERPRET", None)
    probe = ("import ganforge, ganforge.engine.trainer, ganforge.commands.bench\n"
             "assert ganforge.__file__.startswith(" + repr(str(site)) + ")\n"
             "import importlib\n"
             "for name in ('engine', 'models', 'kernels', 'bench'):\n"
             "    try:\n"
             "        importlib.import_module(name)\n"
             "    except ModuleNotFoundError:\n"
             "        continue\n"
             "    raise SystemExit(f'{name} is importable')\n")
    # run from an empty folder: the repository's own folders must not be on the path
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    result = subprocess.run([sys.executable, "-m", "ganforge", "train", "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "--penalty" in result.stdout
