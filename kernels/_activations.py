"""The one table of activations: everything in kernels/ (and the fused layers' explicit input gradient) reads it.

Each entry holds the Triton kernels' ACT code, the activation in torch ops, its first and second derivatives and
whether it is piecewise linear. Piecewise-linear activations have act'' = 0 almost everywhere, which is what
lets a critic built from them compute its input gradient with first-order ops (models.layers).
"""
from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class Activation:
    name: str
    code: int                 # the ACT constexpr of the Triton kernels
    fn: Callable              # fn(z, alpha) -> act(z), differentiable to any order
    slope: Callable           # slope(z, alpha) -> act'(z), in z's dtype
    second: Callable          # second(z, alpha) -> act''(z) (zeros for piecewise-linear activations)
    piecewise_linear: bool
    # slope_from_output(y, alpha) -> act'(z) read off y = act(z), one pass and no z needed; piecewise-linear
    # activations only (y > 0 exactly where z > 0 for relu and lrelu with alpha > 0), else None.
    slope_from_output: Callable | None = None


def _zeros(z, alpha):
    return torch.zeros_like(z)


def _tanh_second(z, alpha):
    a = torch.tanh(z)
    return -2.0 * a * (1.0 - a * a)


def _sigmoid_slope(z, alpha):
    a = torch.sigmoid(z)
    return a * (1.0 - a)


def _sigmoid_second(z, alpha):
    a = torch.sigmoid(z)
    return a * (1.0 - a) * (1.0 - 2.0 * a)


def _step(y, low):
    """1 where y > 0, else ``low``, in y's dtype, in one pass."""
    return torch.where(y > 0, y.new_ones(()), y.new_full((), low))


# Slopes at z = 0 follow torch's own backward (relu: 0, lrelu: alpha), so explicit gradients match autograd's.
_TABLE = (
    Activation("linear", 0, lambda z, alpha: z, lambda z, alpha: torch.ones_like(z), _zeros, True,
               lambda y, alpha: torch.ones_like(y)),
    Activation("relu", 1, lambda z, alpha: torch.relu(z), lambda z, alpha: _step(z, 0.0), _zeros, True,
               lambda y, alpha: _step(y, 0.0)),
    Activation("lrelu", 2, lambda z, alpha: F.leaky_relu(z, alpha), lambda z, alpha: _step(z, alpha), _zeros, True,
               lambda y, alpha: _step(y, alpha)),
    Activation("tanh", 3, lambda z, alpha: torch.tanh(z), lambda z, alpha: 1.0 - torch.tanh(z) ** 2, _tanh_second,
               False),
    Activation("sigmoid", 4, lambda z, alpha: torch.sigmoid(z), _sigmoid_slope, _sigmoid_second, False),
)

ACTIVATION_TABLE = {act.name: act for act in _TABLE}
ACTIVATIONS = tuple(ACTIVATION_TABLE)


def clamp_mask(a, gain, clamp):
    """Where clamp(a * gain, -clamp, clamp) passes its gradient (torch.clamp passes it at the bounds too)."""
    return (a * gain).abs() <= clamp


def activation_slope(z, act, alpha=0.2, gain=1.0, clamp=None):
    """d/dz of clamp(act(z) * gain, -clamp, clamp): gain * act'(z), zero where the clamp is active. No graph."""
    spec = ACTIVATION_TABLE[act]
    with torch.no_grad():
        slope = spec.slope(z, alpha)
        if gain != 1.0:
            slope = slope * gain
        if clamp is not None:
            slope = slope * clamp_mask(spec.fn(z, alpha), gain, clamp)
    return slope
