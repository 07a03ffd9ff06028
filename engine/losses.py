"""Adversarial losses and regularisers, written on D's raw logits (scores for the Wasserstein critic).

Non-saturating and minimax losses use softplus, so that log(sigmoid(x)) never under- or overflows:
log D(x) = -softplus(-x), log(1 - D(x)) = -softplus(x).

Relativistic pairing (rpgan, Jolicoeur-Martineau 2019; R3GAN's loss) compares each real sample's score with the
fake sample's at the same batch position, so both batches must be the same size; the generator's loss reads the
real scores too (as constants: G's step holds D fixed). Least squares (lsgan, Mao et al. 2017) is the
a-b-c = 0-1-1 form: D pulls real scores to 1 and fake ones to 0, G pulls fake scores to 1.
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
    if kind == "rpgan":  # -log sigmoid(D(x_i) - D(G(z_i)))
        return F.softplus(fake_logits - real_logits).mean()
    if kind == "lsgan":
        return 0.5 * (real_logits - 1).square().mean() + 0.5 * fake_logits.square().mean()
    raise ValueError(f"unknown loss {kind!r}")


# Losses whose generator term reads D's scores of a real batch as well as of the generated one.
G_LOSSES_READING_REAL = ("rpgan",)


def g_loss(kind, fake_logits, real_logits=None):
    """The generator's loss on D's logits for generated samples (and, for rpgan, for a real batch)."""
    if kind == "ns":  # maximise log D(G(z))
        return F.softplus(-fake_logits).mean()
    if kind == "minimax":  # minimise log(1 - D(G(z))), the original saturating objective
        return -F.softplus(fake_logits).mean()
    if kind in ("wgan", "hinge"):
        return -fake_logits.mean()
    if kind == "rpgan":  # -log sigmoid(D(G(z_i)) - D(x_i))
        if real_logits is None:
            raise ValueError("the rpgan generator loss needs D's scores of a real batch")
        return F.softplus(real_logits.detach() - fake_logits).mean()
    if kind == "lsgan":
        return 0.5 * (fake_logits - 1).square().mean()
    raise ValueError(f"unknown loss {kind!r}")


def feature_matching_loss(real_features, fake_features):
    """|| mean_b f(x_b) - mean_b f(G(z_b)) ||^2 over D's penultimate features f (Salimans et al. 2016); the real
    side is a constant."""
    dtype = torch.promote_types(fake_features.dtype, torch.float32)  # at least fp32 under autocast
    return (real_features.detach().to(dtype).mean(0) - fake_features.to(dtype).mean(0)).square().sum()


def kl_divergence(mu, log_var):
    """KL(N(mu, diag(exp(log_var))) || N(0, I)) of each sample, summed over the code's dimensions and averaged
    over the batch: mean_b 1/2 sum_j (mu_j^2 + sigma_j^2 - log sigma_j^2 - 1). The VAE's prior term."""
    dtype = torch.promote_types(mu.dtype, torch.float32)  # at least fp32 under autocast
    mu, log_var = mu.to(dtype), log_var.to(dtype)
    return 0.5 * (mu.square() + log_var.exp() - log_var - 1).sum(dim=1).mean()


def feature_reconstruction(recon_features, real_features):
    """The VAE-GAN's reconstruction error in D's feature space (Larsen et al. 2016): minus the log-likelihood of
    the real image's features under a unit Gaussian centred on the reconstruction's, up to a constant:
    mean_b 1/2 ||f_l(x_b) - f_l(x~_b)||^2. The real side is a constant."""
    dtype = torch.promote_types(recon_features.dtype, torch.float32)
    return 0.5 * (recon_features.to(dtype) - real_features.detach().to(dtype)).square().sum(dim=1).mean()


def lecam_regularizer(real_logits, fake_logits, ema_real, ema_fake):
    """LeCam regularisation (Tseng et al. 2021), in the form of the authors' code:
    mean relu(D(x) - ema_fake)^2 + mean relu(ema_real - D(G(z)))^2, where ema_real and ema_fake are moving
    averages of D's mean real and fake scores (constants here). It keeps real scores from running above the
    fakes' average and fake scores below the reals', which bounds how far D can separate them."""
    return (F.relu(real_logits - ema_fake.detach()).square().mean()
            + F.relu(ema_real.detach() - fake_logits).square().mean())


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


def r2_penalty(D, fake, labels=None, gamma=10.0, impl="auto", grad_method="autograd"):
    """gamma / 2 * mean_b ||grad_x D(x_b)||^2 on generated samples, detached from G (R2; R3GAN pairs it with R1).

    Returns (penalty, fake_scores), the fake scores of the same forward pass."""
    return r1_penalty(D, fake.detach(), labels, gamma, impl, grad_method)


@torch.no_grad()
def clip_weights(module, limit):
    """WGAN weight clipping: every parameter of D into [-limit, limit], in place."""
    params = [p for p in module.parameters()]
    torch._foreach_clamp_min_(params, -limit)
    torch._foreach_clamp_max_(params, limit)
