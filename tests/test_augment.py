"""engine.augment: identity at strength 0, differentiable, deterministic under a seed, right on hand-made images,
ADA's strength update; and training runs with it (on CUDA inside the captured steps)."""
import pytest
import torch

from ganforge.engine import augment as aug
from ganforge.engine.config import TrainConfig
from ganforge.engine.data import Dataset
from ganforge.engine.session import build_session, run_iteration


def images(n=6, c=1, size=12, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("policy", ["translation", "cutout", "color", "translation,cutout,color"])
def test_identity_at_strength_zero(policy):
    x = images()
    assert torch.equal(aug.Augment(policy, 0.0, 0.0, 6, "cpu")(x), x)


@pytest.mark.parametrize("policy", ["translation", "cutout", "color"])
def test_deterministic_under_a_seed_and_random_across_samples(policy):
    x = images(n=16, size=16)
    a = aug.Augment(policy, 1.0, 0.0, 16, "cpu")
    torch.manual_seed(3)
    first = a(x)
    torch.manual_seed(3)
    assert torch.equal(a(x), first)
    assert not torch.equal(first, x)
    changes = (first - x).abs().flatten(1).sum(1)
    assert changes.unique().numel() > 1  # each sample draws its own parameters


@pytest.mark.parametrize("op", aug.OPS)
def test_gradients_flow_through_each_op(op):
    """gradcheck in fp64 with the random draws fixed: the op is a differentiable function of the images."""
    x = images(n=3, size=8).double().requires_grad_(True)

    def f(t):
        torch.manual_seed(11)
        return aug._FUNCTIONS[op](t, torch.ones(3, dtype=torch.long))

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-5)


def test_translation_moves_a_pixel_and_fills_with_background():
    x = torch.full((1, 1, 16, 16), -1.0)
    x[0, 0, 8, 8] = 1.0
    torch.manual_seed(0)
    moved = aug.translate(x, torch.ones(1, dtype=torch.long))
    (ys, xs) = (moved[0, 0] == 1.0).nonzero(as_tuple=True)
    assert len(ys) == 1 and abs(int(ys) - 8) <= 2 and abs(int(xs) - 8) <= 2  # at most 1/8 of 16 pixels
    assert int((moved == -1.0).sum()) == 16 * 16 - 1
    assert torch.equal(aug.translate(x, torch.zeros(1, dtype=torch.long)), x)


def test_cutout_blanks_at_most_a_quarter_and_only_chosen_samples():
    x = torch.ones(8, 1, 16, 16)
    torch.manual_seed(1)
    apply = torch.tensor([1, 0] * 4)
    out = aug.cutout(x, apply)
    blanked = (out == -1).flatten(1).sum(1)
    assert torch.all(blanked[apply == 0] == 0)
    assert torch.all(blanked[apply == 1] > 0) and torch.all(blanked[apply == 1] <= 8 * 8)


def test_color_keeps_the_image_when_off_and_changes_mean_or_spread_when_on():
    x = images(n=4)
    torch.manual_seed(2)
    out = aug.color(x, torch.tensor([0, 1, 1, 1]))
    assert torch.equal(out[0], x[0])
    for i in (1, 2, 3):
        dm = (out[i].mean() - x[i].mean()).abs()
        ds = (out[i].std() / x[i].std() - 1).abs()
        assert dm > 1e-4 or ds > 1e-4


def test_adaptive_strength_follows_the_overfitting_signal():
    a = aug.Augment("translation", 1.0, 0.6, batch_size=1000, device="cpu")
    assert float(a.p) == 0.0  # adaptive runs start without augmentation
    for _ in range(30):
        a.adjust(torch.ones(64))  # D sure of every real: overfitting, p rises
    assert float(a.p) == pytest.approx(30 * 1000 / (aug.ADJUST_KIMG * 1000))
    for _ in range(100):
        a.adjust(-torch.ones(64))
    assert float(a.p) == 0.0  # and never below 0


def test_bad_policy_and_point_data_are_refused():
    with pytest.raises(ValueError, match="unknown op rotate"):
        TrainConfig(augment="translation,rotate").validate()
    with pytest.raises(ValueError, match="applies to images"):
        build_session(TrainConfig(dataset="ring8", augment="translation", kernels="ref", batch_size=8))


def _tiny_session(device, **overrides):
    data = Dataset(images(n=64, size=28, seed=5).to(device), torch.arange(64) % 10, 10, "tiny")
    cfg = TrainConfig(model="dcgan", width=8, batch_size=8, kernels="ref", augment="translation,cutout,color",
                      ada_target=0.6, device=str(device), progress=False, **overrides)
    return build_session(cfg, dataset=data)


def test_training_with_augmentation_updates_g_through_it_and_logs_p():
    session = _tiny_session("cpu", graphs="off")
    before = [p.detach().clone() for p in session.state.G.parameters()]
    for i in range(3):
        run_iteration(session, i)
    stats = session.state.read_and_reset_stats()
    assert "augment_p" in stats and 0 <= stats["augment_p"] <= 1
    assert any(not torch.equal(b, p) for b, p in zip(before, session.state.G.parameters()))


@pytest.mark.gpu
def test_augmentation_runs_inside_captured_steps():
    session = _tiny_session(torch.device("cuda"), graphs="on", precision="bf16")
    for i in range(8):  # warm-up, capture and replays of every step kind
        run_iteration(session, i)
    torch.cuda.synchronize()
    assert session.graphs and len(session.runner.graphs) == 2
    p = float(session.state.augment.p)
    assert 0 <= p <= 1 and p > 0  # the adaptive update ran inside the graph (starts at 0, D's sign moves it)


def test_ema_rampup_follows_g_early_and_the_set_decay_later():
    """With a ramp-up the EMA's half-life is capped by the images seen: after one G step it is G itself (the
    cap is 0 before it), and once the cap passes the set half-life the decay is exactly --ema."""
    import math

    session = build_session(TrainConfig(batch_size=8, kernels="ref", ema=0.99, ema_rampup=0.5, progress=False))
    state = session.state
    initial = [p.detach().clone() for p in state.G_ema.parameters()]
    state.g_step()
    for g0, ema_p, p in zip(initial, state.G_ema.parameters(), state.G.parameters()):
        # one step: images seen 8, half-life capped at 4 images -> weight 1 - 0.5 ** 2 = 0.75 on the new G
        torch.testing.assert_close(ema_p, torch.lerp(g0, p.detach(), 0.75))
    state.ema_images.fill_(1e9)  # far past the set half-life
    before = [p.detach().clone() for p in state.G_ema.parameters()]
    state.update_ema()
    expected_weight = 1 - 0.5 ** (8 / min(1e9 * 0.5, 8 * math.log(0.5) / math.log(0.99)))
    assert expected_weight == pytest.approx(0.01, rel=1e-9)
    for b, e, g in zip(before, state.G_ema.parameters(), state.G.parameters()):
        torch.testing.assert_close(e, torch.lerp(b, g, 0.01))
    with pytest.raises(ValueError, match="needs --ema"):
        TrainConfig(ema=0.0, ema_rampup=0.1).validate()


def test_adaptive_strength_and_ema_ramp_survive_a_resume(tmp_path):
    """The adaptive p and the EMA ramp's image count are training state: a resumed run continues them."""
    from ganforge.engine import checkpoint as ckpt

    session = _tiny_session("cpu", graphs="off", ema=0.99, ema_rampup=0.1)
    for i in range(3):
        run_iteration(session, i)
    session.state.augment.p.fill_(0.3125)
    ckpt.save_run_checkpoint(tmp_path, session.state, 3, (1, 28, 28), 0, keep=1)
    fresh = _tiny_session("cpu", graphs="off", ema=0.99, ema_rampup=0.1)
    ckpt.restore_training_state(fresh.state, ckpt.load_checkpoint(tmp_path / "checkpoint.pt"))
    assert float(fresh.state.augment.p) == 0.3125
    assert float(fresh.state.ema_images) == float(session.state.ema_images) == 3 * 8
