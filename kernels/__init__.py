"""Custom ops, each a Triton kernel beside its plain-PyTorch reference (see the kernel contract in the README)."""
from ._dispatch import IMPLS, get_default_impl, resolve_impl, set_default_impl
from .bias_act import ACTIVATIONS, bias_act, bias_act_ref
from .gradient_penalty import gradient_penalty, gradient_penalty_ref

__all__ = ["IMPLS", "ACTIVATIONS", "bias_act", "bias_act_ref", "gradient_penalty", "gradient_penalty_ref",
           "set_default_impl", "get_default_impl", "resolve_impl"]
