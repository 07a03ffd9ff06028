"""Each loss and penalty against a hand-written formula on small tensors."""
import math

import pytest
import torch

from ganforge.engine import losses


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


REAL = torch.tensor([1.5, -0.3, 0.2])
FAKE = torch.tensor([-2.0, 0.7])


def test_non_saturating_and_minimax_d_loss_is_binary_cross_entropy():
    by_hand = (-sum(math.log(sigmoid(r)) for r in REAL.tolist()) / 3
               - sum(math.log(1 - sigmoid(f)) for f in FAKE.tolist()) / 2)
    for kind in ("ns", "minimax"):
        assert losses.d_loss(kind, REAL, FAKE).item() == pytest.approx(by_hand, rel=1e-6)


def test_generator_losses_by_hand():
    ns = -sum(math.log(sigmoid(f)) for f in FAKE.tolist()) / 2
    minimax = sum(math.log(1 - sigmoid(f)) for f in FAKE.tolist()) / 2
    assert losses.g_loss("ns", FAKE).item() == pytest.approx(ns, rel=1e-6)
    assert losses.g_loss("minimax", FAKE).item() == pytest.approx(minimax, rel=1e-6)
    assert losses.g_loss("wgan", FAKE).item() == pytest.approx(-(-2.0 + 0.7) / 2)
    assert losses.g_loss("hinge", FAKE).item() == pytest.approx(-(-2.0 + 0.7) / 2)


def test_wasserstein_and_hinge_d_loss_by_hand():
    assert losses.d_loss("wgan", REAL, FAKE).item() == pytest.approx((-2.0 + 0.7) / 2 - (1.5 - 0.3 + 0.2) / 3)
    hinge = (max(0, 1 - 1.5) + max(0, 1 + 0.3) + max(0, 1 - 0.2)) / 3 + (max(0, 1 - 2.0) + max(0, 1 + 0.7)) / 2
    assert losses.d_loss("hinge", REAL, FAKE).item() == pytest.approx(hinge)


def test_relativistic_pairing_and_least_squares_by_hand():
    real, fake = torch.randn(7, dtype=torch.float64), torch.randn(7, dtype=torch.float64)  # fresh each run
    pairs = list(zip(real.tolist(), fake.tolist()))
    rp_d = sum(-math.log(sigmoid(r - f)) for r, f in pairs) / 7
    rp_g = sum(-math.log(sigmoid(f - r)) for r, f in pairs) / 7
    assert losses.d_loss("rpgan", real, fake).item() == pytest.approx(rp_d, rel=1e-12)
    assert losses.g_loss("rpgan", fake, real).item() == pytest.approx(rp_g, rel=1e-12)
    ls_d = sum(0.5 * (r - 1) ** 2 for r in real.tolist()) / 7 + sum(0.5 * f ** 2 for f in fake.tolist()) / 7
    ls_g = sum(0.5 * (f - 1) ** 2 for f in fake.tolist()) / 7
    assert losses.d_loss("lsgan", real, fake).item() == pytest.approx(ls_d, rel=1e-12)
    assert losses.g_loss("lsgan", fake).item() == pytest.approx(ls_g, rel=1e-12)
    with pytest.raises(ValueError, match="real batch"):
        losses.g_loss("rpgan", fake)


def test_rpgan_generator_loss_treats_real_scores_as_constants():
    real = torch.randn(5, requires_grad=True)
    fake = torch.randn(5, requires_grad=True)
    losses.g_loss("rpgan", fake, real).backward()
    assert real.grad is None and fake.grad.abs().sum() > 0


def test_feature_matching_and_lecam_by_hand():
    real_f, fake_f = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    mean_r = [sum(real_f[b, j].item() for b in range(6)) / 6 for j in range(4)]
    mean_f = [sum(fake_f[b, j].item() for b in range(6)) / 6 for j in range(4)]
    fm = sum((a - b) ** 2 for a, b in zip(mean_r, mean_f))
    assert losses.feature_matching_loss(real_f, fake_f).item() == pytest.approx(fm, rel=1e-12)
    real, fake = torch.randn(5, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    ema_real, ema_fake = torch.tensor(0.3, dtype=torch.float64), torch.tensor(-0.2, dtype=torch.float64)
    lecam = (sum(max(0.0, r - (-0.2)) ** 2 for r in real.tolist()) / 5
             + sum(max(0.0, 0.3 - f) ** 2 for f in fake.tolist()) / 3)
    assert losses.lecam_regularizer(real, fake, ema_real, ema_fake).item() == pytest.approx(lecam, rel=1e-12)


def test_losses_stay_finite_for_huge_logits():
    big = torch.tensor([1e4, -1e4])
    for kind in ("ns", "minimax", "wgan", "hinge", "rpgan", "lsgan"):
        assert torch.isfinite(losses.d_loss(kind, big, big)) and torch.isfinite(losses.g_loss(kind, big, big))


class LinearCritic(torch.nn.Module):
    """D(x) = <w, x> per sample: its input gradient is w for every sample, known in closed form."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x, labels=None):
        return (x * self.w).flatten(1).sum(1)


class SquareCritic(torch.nn.Module):
    """D(x) = sum(x^2) / 2 per sample: its input gradient is x itself."""

    def forward(self, x, labels=None):
        return 0.5 * x.square().flatten(1).sum(1)


def test_wgan_gp_norm_is_per_sample_over_chw_not_per_pixel():
    w = torch.randn(2, 3, 3)
    D = LinearCritic(w)
    real, fake = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    penalty = losses.wgan_gp_penalty(D, real, fake, weight=10.0)
    norm = w.square().sum().sqrt().item()  # one norm over C, H, W
    assert penalty.item() == pytest.approx(10.0 * (norm - 1) ** 2, rel=1e-5)
    per_pixel = 10.0 * (w.abs() - 1).square().mean().item()  # the common mistake gives another value
    assert abs(penalty.item() - per_pixel) > 1e-3


def test_wgan_gp_interpolates_between_real_and_fake():
    D = SquareCritic()
    real, fake = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    alpha = torch.tensor([0.0, 0.5, 1.0])
    x_hat = alpha.reshape(-1, 1, 1, 1) * real + (1 - alpha.reshape(-1, 1, 1, 1)) * fake
    norms = x_hat.flatten(1).norm(dim=1)
    expected = 10.0 * (norms - 1).square().mean()
    penalty = losses.wgan_gp_penalty(D, real, fake, weight=10.0, alpha=alpha)
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)


def test_r1_penalty_by_hand_and_reuses_real_scores():
    D = SquareCritic()
    real = torch.randn(5, 1, 3, 3)
    penalty, scores = losses.r1_penalty(D, real, gamma=4.0)
    expected = 4.0 / 2 * real.flatten(1).square().sum(1).mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(scores.detach(), D(real))


def test_r2_penalty_by_hand_on_detached_fakes():
    D = SquareCritic()
    source = torch.randn(4, 1, 2, 2, requires_grad=True)
    fake = source * 2  # as if from G: the penalty must not reach it
    penalty, scores = losses.r2_penalty(D, fake, gamma=3.0)
    expected = 3.0 / 2 * fake.detach().flatten(1).square().sum(1).mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(scores.detach(), D(fake.detach()))
    assert not penalty.requires_grad or torch.autograd.grad(penalty, source, allow_unused=True)[0] is None


def test_penalty_gradient_reaches_d_weights():
    """The penalty must be back-propagated through D's double backward into its weights."""
    D = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = D

        def forward(self, x, labels=None):
            return self.net(x).squeeze(1)

    critic = Wrapped()
    penalty = losses.wgan_gp_penalty(critic, torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2))
    penalty.backward()
    # every weight matrix gets a gradient (the last bias cannot: the input gradient does not depend on it)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in D.parameters() if p.dim() == 2)


def test_weight_clipping():
    D = torch.nn.Linear(10, 10)
    torch.nn.init.normal_(D.weight, std=5.0)
    losses.clip_weights(D, 0.01)
    assert all(p.abs().max() <= 0.01 for p in D.parameters())


def test_unknown_loss_raises():
    with pytest.raises(ValueError, match="unknown loss"):
        losses.d_loss("bogus", REAL, FAKE)
    with pytest.raises(ValueError, match="unknown loss"):
        losses.g_loss("bogus", FAKE)
