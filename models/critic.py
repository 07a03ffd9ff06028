"""The critics' explicit input gradient: scores and d score / d input from one forward and a first-order backward.

A critic here is ``features`` (fused layers in sequence), a ``head`` (a fused linear layer to one logit) and, when
conditional, a projection term logit += <embed(y), h> on the flattened features h. With piecewise-linear
activations the input gradient is a chain of linear maps and slope multiplies, so it is built with first-order
ops and stays differentiable in every weight: a gradient penalty on it trains D with one ordinary backward,
equal to autograd's double backward.
"""
from torch import nn

from .layers import FusedConv2d, FusedLinear

# Modules a critic may hold for the explicit gradient to be exact; anything else (BatchNorm, dropout, a user's
# module) sends the engine back to autograd's double backward.
_ALLOWED = (nn.Sequential, nn.Embedding, FusedLinear, FusedConv2d)


def critic_supports_input_grad(critic, own_forward):
    """True when ``critic`` still runs ``own_forward`` and holds only fused, piecewise-linear layers."""
    if type(critic).forward is not own_forward:  # a subclass that rewrote forward: the chain is unknown
        return False
    pending = list(critic.children())
    while pending:
        module = pending.pop()
        if isinstance(module, (FusedLinear, FusedConv2d)):
            if not module.supports_input_grad():  # its own check covers its conv and any BatchNorm in it
                return False
        elif isinstance(module, _ALLOWED):
            pending.extend(module.children())
        else:
            return False
    return True


def scores_and_input_grad(critic, x, features_input, labels=None):
    """(scores (N,), d scores_b / d x_b in x's shape and dtype) for a critic of the form described above.

    ``features_input`` is x as the first feature layer takes it (e.g. flattened for an MLP)."""
    trace, h = [], features_input
    for layer in critic.features:
        y, slope = layer.forward_with_slope(h)
        trace.append((layer, slope, h.shape))
        h = y
    feature_shape = h.shape
    h = h.flatten(1)
    logit, head_slope = critic.head.forward_with_slope(h)
    logit = logit.squeeze(1)
    grad = critic.head.input_grad(head_slope.new_ones(head_slope.shape), head_slope)  # d logit / d h: (N, F)
    if critic.label_embed is not None:
        embedding = critic.label_embed(labels)
        logit = logit + (embedding * h).sum(dim=1)
        grad = grad + embedding
    grad = grad.reshape(feature_shape)
    for layer, slope, input_shape in reversed(trace):
        grad = layer.input_grad(grad, slope, input_shape)
    return logit, grad.reshape(x.shape).to(x.dtype)
