"""pytest-benchmark setup for `pytest bench/benchmarks --benchmark-only`.

Without CUDA the Triton kernels run through Triton's interpreter, which must be switched on before any
@triton.jit decorator runs, i.e. before `kernels` is imported: so this comes first of all.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.hookimpl(optionalhook=True)  # optional: a plain pytest without pytest-benchmark still collects
def pytest_benchmark_update_machine_info(config, machine_info):
    """Saved benchmark runs say which GPU and which torch / triton they were measured with."""
    machine_info["torch"] = torch.__version__
    try:
        import triton
        machine_info["triton"] = triton.__version__
    except ImportError:
        machine_info["triton"] = None
    from ganforge.kernels._dispatch import interpreter_on

    machine_info["triton_interpret"] = interpreter_on()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        machine_info["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                               "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda,
                               "count": torch.cuda.device_count()}
    else:
        machine_info["gpu"] = None


@pytest.fixture(scope="session")
def device():
    """The bench's own device rule: CUDA when present, else the CPU."""
    from ganforge.bench.suite import resolve_device

    return resolve_device()

