"""Choosing between a Triton kernel and its plain-PyTorch reference.

Every public op takes ``impl="auto" | "triton" | "ref"``: "auto" uses Triton for CUDA tensors, or for any
tensor when Triton's interpreter is on, and the reference otherwise. There is no process-wide default: the
caller carries its choice (the models' fused layers hold it, see models.set_kernel_impl), so two runs in one
process never see each other's setting.
"""
import os

import torch

IMPLS = ("auto", "triton", "ref")


def interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_impl(impl: str, tensor: torch.Tensor) -> str:
    """Return "triton" or "ref" for an op about to run on ``tensor``."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        use_triton = triton_available() and (tensor.is_cuda or interpreter_on())
        return "triton" if use_triton else "ref"
    if impl == "triton" and not (tensor.is_cuda or interpreter_on()):
        raise ValueError("impl='triton' needs a CUDA tensor or TRITON_INTERPRET=1 set before kernels are imported")
    return impl


_SM_COUNT = {}


def sm_count(device):
    """Streaming multiprocessors of a CUDA device, cached (the property query is slow for a per-call launcher)."""
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SM_COUNT:
        _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SM_COUNT[idx]
