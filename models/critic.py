"""The critics' explicit input gradient: scores and d score / d input from one forward and a first-order backward.

A critic here is ``features`` (fused layers in sequence), a ``head`` (a fused linear layer to one logit) and, when
conditional, a projection term logit += <embed(y), h> on the flattened features h. With piecewise-linear
activations the input gradient is a chain of linear maps and slope multiplies, so it is built with first-order
ops and stays differentiable in every weight: a gradient penalty on it trains D with one ordinary backward,
equal to autograd's double backward.
"""
from torch import nn

from .conditioning import AttributeEmbedding
from .layers import FusedConv2d, FusedLinear

# Modules a critic may hold for the explicit gradient to be exact; anything else (BatchNorm, dropout, a user's
# module) sends the engine back to autograd's double backward.
_ALLOWED = (nn.Sequential, nn.Embedding, AttributeEmbedding, FusedLinear, FusedConv2d)


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


class ProjectionCritic(nn.Module):
    """Base of the critics in models/: ``features`` -> flatten -> ``head`` logit, plus the projection term
    <embed(y), h> when conditional. Subclasses build the three parts and say how x enters the features."""

    def features_input(self, x):
        """x as the first feature layer takes it (an MLP flattens it)."""
        return x

    def forward(self, x, labels=None):
        return self.scores_and_features(x, labels)[0]

    def scores_and_features(self, x, labels=None):
        """(scores (N,), the flattened features h (N, F) the head reads): feature matching's f(x)."""
        h = self.features(self.features_input(x)).flatten(1)
        logit = self.head(h).squeeze(1)
        if self.label_embed is not None:
            logit = logit + (self.label_embed(labels) * h).sum(dim=1)
        return logit, h

    def scores_and_layer_features(self, x, labels=None, layer=1):
        """(scores (N,), the output of feature layer ``layer`` (1-based) flattened to (N, F_layer)): the VAE-GAN's
        learned similarity compares images there. The same computation as forward."""
        if not 1 <= layer <= len(self.features):
            raise ValueError(f"this critic has feature layers 1..{len(self.features)}, asked for layer {layer}")
        h = self.features_input(x)
        for index, block in enumerate(self.features, start=1):
            h = block(h)
            if index == layer:
                kept = h.flatten(1)
        h = h.flatten(1)
        logit = self.head(h).squeeze(1)
        if self.label_embed is not None:
            logit = logit + (self.label_embed(labels) * h).sum(dim=1)
        return logit, kept

    def supports_input_grad(self):
        """Whether scores_and_input_grad is exact here (no BatchNorm, piecewise-linear activations only)."""
        return (critic_supports_input_grad(self, ProjectionCritic.forward)
                and type(self).scores_and_features is ProjectionCritic.scores_and_features)

    def scores_and_input_grad(self, x, labels=None):
        """(scores, d scores / d x) without double backward; both differentiable in the weights.

        Args:
            x: the critic's input batch (N, ...).
            labels: class labels (N,) of a conditional critic, else None.

        Raises:
            ValueError: when supports_input_grad() is False (use autograd's double backward then).
        """
        if not self.supports_input_grad():
            raise ValueError("this critic has BatchNorm or a smooth activation: its input gradient needs "
                             "autograd's double backward")
        return scores_and_input_grad(self, x, self.features_input(x), labels)
