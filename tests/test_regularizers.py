"""The toolbox beyond the classic losses: spectral norm, RpGAN's generator step, feature matching and LeCam, and
resumed runs that carry their state (power-iteration vectors, LeCam's moving averages) bit for bit."""
import pytest
import torch
from torch.nn.utils import parametrizations

from ganforge.engine import checkpoint as ckpt
from ganforge.engine.config import TrainConfig
from ganforge.engine.data import Dataset
from ganforge.engine.session import build_session
from ganforge.engine.trainer import train
from ganforge.models import build_models, spectral_norm_layers
from ganforge.models.layers import FusedConv2d, FusedLinear


def sn_matrix(weight, transposed):
    """The weight as spectral norm views it: output dimension first, the rest flattened."""
    return (weight.transpose(0, 1) if transposed else weight).flatten(1)


@pytest.mark.parametrize("layer", [
    lambda: FusedLinear(37, 23, act="lrelu"),
    lambda: FusedConv2d(3, 8, 4, 2, 1, act="lrelu"),
    lambda: FusedConv2d(8, 5, 4, 2, 1, act="relu", transposed=True),
], ids=("linear", "conv", "conv-transposed"))
def test_sigma_converges_to_the_largest_singular_value(layer):
    layer = layer().double().enable_spectral_norm()
    weight = layer.conv.weight if isinstance(layer, FusedConv2d) else layer.weight
    with torch.no_grad():
        weight.normal_()  # fresh weights: the vectors start far from their singular pair
    for _ in range(1000):  # enough for the gap between the top two singular values of any draw seen so far
        layer.power_iteration_()
    transposed = getattr(layer, "transposed", False)
    expected = torch.linalg.matrix_norm(sn_matrix(weight, transposed), 2)
    torch.testing.assert_close(layer.spectral.sigma(weight), expected, rtol=1e-6, atol=0)
    normalized = torch.linalg.matrix_norm(sn_matrix(layer.effective_weight(), transposed), 2)
    torch.testing.assert_close(normalized, torch.ones((), dtype=torch.float64), rtol=1e-6, atol=0)


def test_forward_and_weight_gradients_equal_torch_spectral_norm_with_the_same_vectors():
    """torch's parametrization, given our u and v and put in eval mode (no iteration of its own), computes the
    same W / sigma: outputs and weight gradients (through sigma) agree."""
    torch.manual_seed(0)
    ours = FusedConv2d(3, 6, 4, 2, 1, act="lrelu", impl="ref").double().enable_spectral_norm()
    conv = torch.nn.Conv2d(3, 6, 4, 2, 1, bias=False).double()
    conv.weight.data.copy_(ours.conv.weight.data)
    conv = parametrizations.spectral_norm(conv)
    conv.parametrizations.weight[0]._u.copy_(ours.spectral.u)
    conv.parametrizations.weight[0]._v.copy_(ours.spectral.v)
    conv.eval()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    upstream = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    mine = ours.convolve(x)
    theirs = conv(x)
    torch.testing.assert_close(mine, theirs)
    (g_mine,) = torch.autograd.grad((mine * upstream).sum(), ours.conv.weight)
    (g_theirs,) = torch.autograd.grad((theirs * upstream).sum(), conv.parametrizations.weight.original)
    torch.testing.assert_close(g_mine, g_theirs)


def tiny_data(shape=(1, 28, 28), n=64):
    gen = torch.Generator().manual_seed(0)
    return Dataset(torch.rand((n, *shape), generator=gen) * 2 - 1, torch.randint(0, 10, (n,), generator=gen), 10,
                   "synthetic")


def tiny_session(**fields):
    cfg = TrainConfig(model="dcgan", width=4, batch_size=8, kernels="ref", progress=False, fid_samples=0, seed=1,
                      **fields).validate()
    return build_session(cfg, dataset=tiny_data())


def test_spectral_norm_iterates_once_per_d_step_and_never_in_g_step():
    session = tiny_session(spectral_norm=True, loss="hinge", penalty="none")
    state = session.state
    layers = spectral_norm_layers(state.D)
    assert len(layers) == len(state.spectral_layers) == 3  # two convolutions and the head
    assert all(key in state.D.state_dict() for key in ("features.0.spectral.u", "head.spectral.v"))
    state.d_step()  # the weights move away from those the vectors were refined on
    before = [layer.spectral.u.clone() for layer in layers]
    before_v = [layer.spectral.v.clone() for layer in layers]
    state.g_step()
    assert all(torch.equal(layer.spectral.u, u) for layer, u in zip(layers, before))
    assert all(torch.equal(layer.spectral.v, v) for layer, v in zip(layers, before_v))
    # the next D step refines each pair once, on the weights as they are before its update
    expected = []
    for layer, u in zip(layers, before):
        w = layer.spectral.matrix(layer.conv.weight if isinstance(layer, FusedConv2d) else layer.weight).detach()
        v = torch.nn.functional.normalize(w.t() @ u, dim=0, eps=1e-12)
        expected.append((torch.nn.functional.normalize(w @ v, dim=0, eps=1e-12), v))
    state.d_step()
    for layer, v_before, (want_u, want_v) in zip(layers, before_v, expected):
        assert not torch.equal(layer.spectral.v, v_before)
        torch.testing.assert_close(layer.spectral.u, want_u, rtol=0, atol=0)
        torch.testing.assert_close(layer.spectral.v, want_v, rtol=0, atol=0)
    # the weights D uses have spectral norm (close to) 1 after a few D steps
    for _ in range(20):
        state.d_step()
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.effective_weight().detach().flatten(1), 2)
        assert 0.9 < sigma.item() < 1.1


@pytest.mark.parametrize("fields", [dict(loss="rpgan", penalty="r1+r2"),
                                    dict(loss="rpgan", penalty="r1+r2", spectral_norm=True, feature_matching=1.0),
                                    dict(loss="lsgan", lecam=0.3)])
def test_generator_step_changes_no_d_weight(fields):
    state = tiny_session(**fields).state
    state.d_step()
    d_before = {k: v.clone() for k, v in state.D.state_dict().items()}
    g_before = {k: v.clone() for k, v in state.G.state_dict().items()}
    lecam_before = state.lecam_ema.clone()
    state.g_step()
    assert all(torch.equal(state.D.state_dict()[k], v) for k, v in d_before.items())
    assert any(not torch.equal(state.G.state_dict()[k], v) for k, v in g_before.items())
    assert torch.equal(state.lecam_ema, lecam_before)


def test_feature_matching_term_reaches_g():
    """With feature matching on, G's gradient differs from the adversarial term's alone."""
    grads = []
    for weight in (0.0, 1.0):
        state = tiny_session(feature_matching=weight, penalty="none").state
        torch.manual_seed(5)
        state.g_step()
        grads.append(torch.cat([p.detach().flatten() for p in state.G.parameters()]))
    assert not torch.allclose(grads[0], grads[1])


def test_lecam_moving_averages_follow_the_scores():
    state = tiny_session(lecam=0.5, loss="hinge", penalty="none").state
    assert torch.equal(state.lecam_ema, torch.zeros(2))
    stats = state.d_step()
    real_mean, fake_mean = stats[2].item(), stats[3].item()
    torch.testing.assert_close(state.lecam_ema, torch.tensor([real_mean, fake_mean]) * 0.01)
    assert stats[1].item() > 0  # the regulariser is in the penalty statistic


def test_resumed_run_with_spectral_norm_lecam_and_rpgan_continues_bit_exactly(tmp_path):
    base = dict(model="dcgan", width=4, iterations=6, batch_size=8, kernels="ref", progress=False, log_every=3,
                sample_every=100, ckpt_every=3, fid_samples=0, seed=3, loss="rpgan", penalty="r1+r2",
                spectral_norm=True, lecam=0.3, feature_matching=0.5)
    data = tiny_data()
    train(TrainConfig(out=str(tmp_path / "a"), **base), dataset=data)
    train(TrainConfig(out=str(tmp_path / "b"), **{**base, "iterations": 3}), dataset=data)
    half = ckpt.load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert "features.0.spectral.u" in half["D"] and half["lecam_ema"].abs().sum() > 0
    train(TrainConfig(out=str(tmp_path / "b"), **base), dataset=data, resume=str(tmp_path / "b"))
    a = ckpt.load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = ckpt.load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    for part in ("G", "D"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    assert torch.equal(a["lecam_ema"], b["lecam_ema"])
    with pytest.raises(ValueError, match="--spectral-norm True in the checkpoint, False now"):
        train(TrainConfig(out=str(tmp_path / "c"), **{**base, "spectral_norm": False}),
              dataset=data, resume=str(tmp_path / "b" / "checkpoint.pt"))


def test_old_checkpoints_without_the_new_fields_still_resume():
    """A checkpoint written before --spectral-norm existed has no such field: it reads as the default (off)."""
    session = tiny_session()
    state = {"config": {k: v for k, v in session.cfg.to_dict().items() if k != "spectral_norm"},
             "data_shape": [1, 28, 28]}
    ckpt.check_same_architecture(state, session.cfg, "old.pt", data_shape=(1, 28, 28))


@pytest.mark.parametrize("fields,message", [
    (dict(feature_matching=-1.0), "--feature-matching must be a finite weight >= 0"),
    (dict(lecam=float("nan")), "--lecam must be a finite weight >= 0"),
    (dict(loss="rpgans"), "--loss must be one of"),
    (dict(penalty="r3"), "--penalty must be one of"),
])
def test_bad_toolbox_settings_fail_validation(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**fields).validate()


def test_build_models_spectral_norm_only_touches_d():
    G, D = build_models("mlp", (1, 28, 28), spectral_norm=True)
    assert not spectral_norm_layers(G) and len(spectral_norm_layers(D)) == 4
