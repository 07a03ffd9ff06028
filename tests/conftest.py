# The Triton interpreter must be on before any @triton.jit decorator runs, so this comes first of all.
# Without CUDA every Triton kernel runs through the interpreter; with CUDA the real kernels are tested.
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import tempfile  # noqa: E402

import pytest  # noqa: E402

# Real-set features are cached between runs (engine.metrics.scores.cache_dir); the suite keeps its own cache,
# inherited by the processes it starts, and leaves the user's untouched.
os.environ["GANFORGE_CACHE"] = tempfile.mkdtemp(prefix="ganforge-test-cache-")
# --precision auto means fp32 on every CPU here (bf16 where the CPU has AMX, outside the suite): the suite's results
# must not depend on the CPU that runs it, and the interpreted Triton kernels are slow in bf16. Child processes
# inherit it. tests/test_devices.py checks the AMX rule itself.
os.environ["GANFORGE_CPU_AUTO_PRECISION"] = "fp32"


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")
    config.addinivalue_line("markers", "slow: seconds or more each (training runs, torchrun ranks, subprocesses); "
                                       "the fast tier, `pytest -m 'not slow'`, leaves them out")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)



@pytest.fixture
def one_thread():
    """One torch thread, as in the fault tests' subprocesses: on a busy machine extra threads only contend, and
    one thread keeps the arithmetic identical from run to run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
