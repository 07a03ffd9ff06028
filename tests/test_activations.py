"""The activation table: each entry's derivatives agree with autograd on its own function, on fresh inputs."""
import pytest
import torch

from ganforge.kernels import ACTIVATION_TABLE, ACTIVATIONS, activation_slope


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_table_derivatives_match_autograd(act):
    spec = ACTIVATION_TABLE[act]
    gen = torch.Generator().manual_seed(len(act))
    z = (torch.randn(257, generator=gen, dtype=torch.float64) * 3).requires_grad_(True)
    z.data[:3] = 0.0  # the kink: the table must pick torch's own one-sided slope there
    (d1,) = torch.autograd.grad(spec.fn(z, 0.2).sum(), z, create_graph=True)
    torch.testing.assert_close(spec.slope(z.detach(), 0.2), d1.detach())
    if spec.piecewise_linear:
        d2 = torch.autograd.grad(d1.sum(), z, allow_unused=True)[0] if d1.requires_grad else None
        assert d2 is None or torch.count_nonzero(d2) == 0
        assert torch.count_nonzero(spec.second(z.detach(), 0.2)) == 0
    else:
        (d2,) = torch.autograd.grad(d1.sum(), z)
        torch.testing.assert_close(spec.second(z.detach(), 0.2), d2)


def test_codes_are_distinct_and_dense():
    assert sorted(spec.code for spec in ACTIVATION_TABLE.values()) == list(range(len(ACTIVATIONS)))


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_slope_with_gain_and_clamp_matches_autograd(act):
    gen = torch.Generator().manual_seed(3)
    z = (torch.randn(300, generator=gen, dtype=torch.float64) * 3).requires_grad_(True)
    y = (ACTIVATION_TABLE[act].fn(z, 0.1) * 1.7).clamp(-0.9, 0.9)
    (dz,) = torch.autograd.grad(y.sum(), z)
    torch.testing.assert_close(activation_slope(z.detach(), act, alpha=0.1, gain=1.7, clamp=0.9), dz)
