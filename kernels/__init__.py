"""Custom ops, each a Triton kernel beside its plain-PyTorch reference (see the kernel contract in the README)."""
from ._activations import ACTIVATION_TABLE, ACTIVATIONS, activation_slope
from ._dispatch import IMPLS, interpreter_on, resolve_impl
from .bias_act import bias_act, bias_act_ref
from .gradient_penalty import gradient_penalty, gradient_penalty_ref

__all__ = ["IMPLS", "ACTIVATIONS", "ACTIVATION_TABLE", "activation_slope", "bias_act", "bias_act_ref",
           "gradient_penalty", "gradient_penalty_ref", "interpreter_on", "resolve_impl"]
