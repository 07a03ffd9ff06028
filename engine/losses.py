"""Adversarial losses and regularisers, written on D's raw logits (scores for the Wasserstein critic).

Non-saturating and minimax losses use softplus, so that log(sigmoid(x)) never under- or overflows:
log D(x) = -softplus(-x), log(1 - D(x)) = -softplus(x).
"""
import torch
from torch.nn import functional as F

from .. import kernels


def d_loss(kind, real_logits, fake_logits):
    """The discriminator's (critic's) loss, averaged over the batch."""
    if kind in ("ns", "minimax"):  # both train D with binary cross-entropy: real -> 1, fake -> 0
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if kind == "wgan":
        return fake_logits.mean() - real_logits.mean()
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    raise ValueError(f"unknown loss {kind!r}")


def g_loss(kind, fake_logits):
    """The generator's loss on D's logits for generated samples."""
    if kind == "ns":  # maximise log D(G(z))
        return F.softplus(-fake_logits).mean()
    if kind == "minimax":  # minimise log(1 - D(G(z))), the original saturating objective
        return -F.softplus(fake_logits).mean()
    if kind in ("wgan", "hinge"):
        return -fake_logits.mean()
    raise ValueError(f"unknown loss {kind!r}")


def supports_explicit_input_grad(D):
    """Whether D computes its input gradient explicitly (models' critics without BatchNorm or smooth acts)."""
    check = getattr(D, "supports_input_grad", None)
    return callable(check) and callable(getattr(D, "scores_and_input_grad", None)) and bool(check())


def resolve_penalty_grad(D, choice):
    """How the penalty's input gradient is computed: "explicit" or "autograd" (double backward).

    "auto" picks explicit when D supports it; "explicit" on a critic that cannot raises ValueError. The choice
    itself was checked by TrainConfig.validate."""
    if choice == "autograd":
        return "autograd"
    if supports_explicit_input_grad(D):
        return "explicit"
    if choice == "explicit":
        raise ValueError(f"--penalty-grad explicit: the critic ({type(D).__name__}) has BatchNorm, a smooth "
                         "activation or layers of its own, so its input gradient needs autograd; use "
                         "--penalty-grad auto or autograd")
    return "autograd"


def input_gradient(D, x, labels=None, method="autograd"):
    """(d sum(D(x)) / dx, D(x)), differentiable in D's weights so a penalty on it can be back-propagated.

    "autograd": the gradient keeps its graph (create_graph), and the penalty's backward is a double backward.
    "explicit": D.scores_and_input_grad builds it from first-order ops (exact for piecewise-linear critics)."""
    if method == "explicit":
        scores, grad = D.scores_and_input_grad(x.detach(), labels)
        return grad, scores
    x = x.detach().requires_grad_(True)
    scores = D(x, labels)
    (grad,) = torch.autograd.grad(scores.float().sum(), x, create_graph=True)
    return grad, scores


def wgan_gp_penalty(D, real, fake, labels=None, weight=10.0, alpha=None, impl="auto", grad_method="autograd"):
    """lambda * mean_b (||grad_x D(x_hat_b)|| - 1)^2 on random interpolates x_hat = alpha*real + (1-alpha)*fake.

    The norm is per sample over all non-batch dims (C, H, W), not per pixel. ``alpha`` (N,) is drawn here unless
    given, so tests can replay the same draw. ``grad_method``: "autograd" or "explicit" (see input_gradient).
    """
    if alpha is None:
        alpha = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    alpha = alpha.reshape([-1] + [1] * (real.dim() - 1))
    x_hat = torch.lerp(fake.detach(), real.detach(), alpha)  # alpha * real + (1 - alpha) * fake
    grad, _ = input_gradient(D, x_hat, labels, grad_method)
    return kernels.gradient_penalty(grad, kind="wgan-gp", weight=weight, center=1.0, impl=impl)


def r1_penalty(D, real, labels=None, gamma=10.0, impl="auto", grad_method="autograd"):
    """gamma / 2 * mean_b ||grad_x D(x_b)||^2 on real samples (Mescheder et al., 2018).

    Returns (penalty, real_scores): the real scores of the same forward pass serve the adversarial loss too.
    """
    grad, scores = input_gradient(D, real, labels, grad_method)
    return kernels.gradient_penalty(grad, kind="r1", weight=gamma, impl=impl), scores


@torch.no_grad()
def clip_weights(module, limit):
    """WGAN weight clipping: every parameter of D into [-limit, limit], in place."""
    params = [p for p in module.parameters()]
    torch._foreach_clamp_min_(params, -limit)
    torch._foreach_clamp_max_(params, limit)
