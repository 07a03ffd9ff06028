"""Helpers both Triton ops share: memory layouts the kernels accept, and how many programs fill the device."""
import torch

from ._dispatch import sm_count


def dense(x):
    """x itself when its memory order is one the kernels handle (contiguous, or channels_last 4-D), else a copy."""
    if x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)):
        return x
    return x.contiguous()


def programs_target(device, per_sm=8, off_device=1):
    """Programs that fill a CUDA device (``per_sm`` resident per multiprocessor); ``off_device`` on the interpreter,
    where each program costs about a millisecond."""
    if device.type != "cuda":
        return off_device
    return per_sm * sm_count(device)
