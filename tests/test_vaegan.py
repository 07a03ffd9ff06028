"""The VAE-GAN (Larsen et al. 2016): its loss terms against their formulas, the G step's split of gradients
between encoder and decoder, D's half-reconstruction fakes, resume, and the encode / edit / decode round trip."""
import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from ganforge.cli import main as cli
from ganforge.engine import checkpoint as ckpt
from ganforge.engine import losses
from ganforge.engine.apps.editing.codes import decode_codes, encode_images
from ganforge.engine.apps.editing.edit import run_edit
from ganforge.engine.config import TrainConfig
from ganforge.engine.data import Dataset, load_dataset
from ganforge.engine.session import build_session
from ganforge.engine.trainer import train
from ganforge.models import VAEGANGenerator, build_models


def tiny_data(shape=(1, 28, 28), n=64):
    gen = torch.Generator().manual_seed(0)
    return Dataset(torch.rand((n, *shape), generator=gen) * 2 - 1, torch.randint(0, 10, (n,), generator=gen), 10,
                   "synthetic")


def tiny_session(**fields):
    settings = dict(model="vaegan", width=4, batch_size=8, kernels="ref", progress=False, fid_samples=0, seed=1)
    cfg = TrainConfig(**{**settings, **fields}).validate()
    return build_session(cfg, dataset=tiny_data())


def test_kl_term_equals_the_closed_form_kl_of_two_gaussians():
    gen = torch.Generator().manual_seed(5)
    mu, log_var = torch.randn(7, 11, generator=gen, dtype=torch.float64), torch.randn(7, 11, generator=gen,
                                                                                     dtype=torch.float64)
    expected = kl_divergence(Normal(mu, (0.5 * log_var).exp()), Normal(0.0, 1.0)).sum(dim=1).mean()
    torch.testing.assert_close(losses.kl_divergence(mu, log_var), expected)
    assert losses.kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)) == 0  # q equal to the prior


def test_feature_reconstruction_is_the_unit_gaussian_negative_log_likelihood():
    gen = torch.Generator().manual_seed(6)
    recon, real = torch.randn(5, 13, generator=gen, dtype=torch.float64), torch.randn(5, 13, generator=gen,
                                                                                     dtype=torch.float64)
    nll = -Normal(recon, 1.0).log_prob(real).sum(dim=1).mean() - 0.5 * 13 * math.log(2 * math.pi)
    torch.testing.assert_close(losses.feature_reconstruction(recon, real), nll)
    recon.requires_grad_(True)
    losses.feature_reconstruction(recon, real.requires_grad_(True)).backward()
    assert real.grad is None  # the real side is a constant


@pytest.mark.parametrize("backbone", ["mlp", "dcgan"])
def test_layer_features_are_the_critic_own_layers_and_scores_equal_forward(backbone):
    G, D = build_models("vaegan", (1, 28, 28), width=4, num_classes=10, backbone=backbone, impl="ref")
    assert isinstance(G, VAEGANGenerator)
    x, y = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))
    for layer in range(1, len(D.features) + 1):
        scores, features = D.scores_and_layer_features(x, y, layer)
        h = D.features_input(x)
        for block in list(D.features)[:layer]:
            h = block(h)
        torch.testing.assert_close(features, h.flatten(1))
        torch.testing.assert_close(scores, D(x, y))
    with pytest.raises(ValueError, match="feature layers 1.."):
        D.scores_and_layer_features(x, y, len(D.features) + 1)


def test_d_fakes_are_prior_samples_then_reconstructions_of_the_reals():
    state = tiny_session(conditional=True).state
    real, real_labels = state.real_batch()
    z, labels = state.latent_batch()
    with torch.no_grad():
        codes, code_labels, mu, log_var = state.vaegan_codes(real, real_labels, z, labels)
        mu_ref, log_var_ref = state.G.encode(real[4:], real_labels[4:])
    assert torch.equal(codes[:4], z[:4]) and torch.equal(code_labels[:4], labels[:4])
    torch.testing.assert_close(codes[4:], mu_ref + (0.5 * log_var_ref).exp() * z[4:])
    assert torch.equal(code_labels[4:], real_labels[4:])
    assert mu.shape == log_var.shape == (4, state.cfg.z_dim)


@pytest.mark.parametrize("loss", ["ns", "rpgan"])
def test_g_step_trains_the_encoder_on_its_loss_the_decoder_on_its_own_and_d_not_at_all(loss):
    state = tiny_session(loss=loss, vae_gamma=0.7, vae_kl=1.3, vae_layer=2).state
    state.set_learning_rates(lr_g=0.0)  # the step leaves its gradients in .grad and the weights in place
    d_before = {k: v.clone() for k, v in state.D.state_dict().items()}
    encoder, decoder = list(state.G.encoder.parameters()), list(state.G.decoder.parameters())
    torch.manual_seed(11)
    dec_loss, enc_loss, _, kl, recon = state.vaegan_g_losses()
    assert kl > 0 and recon > 0
    expected_enc = torch.autograd.grad(enc_loss, encoder, retain_graph=True)
    expected_dec = torch.autograd.grad(dec_loss, decoder)
    # the losses as documented: decoder = GAN + gamma * recon, encoder = vae_kl * KL + recon
    torch.manual_seed(11)
    state.D.requires_grad_(False)
    dec2, enc2, scores, kl2, recon2 = state.vaegan_g_losses()
    torch.testing.assert_close(enc2, 1.3 * kl2 + recon2)
    if loss == "ns":  # (rpgan's GAN term also reads D's real scores, which the step does not return)
        torch.testing.assert_close(dec2, torch.nn.functional.softplus(-scores.float()).mean() + 0.7 * recon2)
    torch.manual_seed(11)
    stats = state.g_step()
    for p, g in zip(encoder, expected_enc):
        torch.testing.assert_close(p.grad, g)
    for p, g in zip(decoder, expected_dec):
        torch.testing.assert_close(p.grad, g)
    assert all(p.grad is None for p in state.D.parameters())
    assert all(torch.equal(v, d_before[k]) for k, v in state.D.state_dict().items())
    assert stats.shape == (4,)  # g_loss, fake score, KL, reconstruction
    torch.testing.assert_close(stats[2], kl.detach())


def test_a_resumed_vaegan_run_continues_bit_exactly(tmp_path):
    base = dict(model="vaegan", width=4, iterations=6, batch_size=8, kernels="ref", progress=False, log_every=3,
                sample_every=100, ckpt_every=3, fid_samples=0, seed=3, conditional=True, ema=0.9, ema_rampup=0.0)
    data = tiny_data()
    train(TrainConfig(out=str(tmp_path / "a"), **base), dataset=data)
    train(TrainConfig(out=str(tmp_path / "b"), **{**base, "iterations": 3}), dataset=data)
    train(TrainConfig(out=str(tmp_path / "b"), **base), dataset=data, resume=str(tmp_path / "b"))
    a = ckpt.load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = ckpt.load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert any(key.startswith("encoder.") for key in a["G"]) and any(k.startswith("encoder.") for k in a["G_ema"])
    for part in ("G", "D", "G_ema"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    with pytest.raises(ValueError, match="--vae-backbone 'mlp' in the checkpoint, 'dcgan' now"):
        train(TrainConfig(out=str(tmp_path / "c"), **{**base, "vae_backbone": "dcgan"}), dataset=data,
              resume=str(tmp_path / "b" / "checkpoint.pt"))


@pytest.mark.parametrize("fields,message", [
    (dict(batch_size=9), "even --batch-size"),
    (dict(vae_layer=0), "--vae-layer must be >= 1"),
    (dict(vae_gamma=-1.0), "--vae-gamma must be a finite weight"),
    (dict(vae_kl=float("inf")), "--vae-kl must be a finite weight"),
    (dict(augment="translation"), "--augment is not supported with --model vaegan"),
    (dict(feature_matching=1.0), "--feature-matching is not supported with --model vaegan"),
    (dict(vae_backbone="resnet"), "--vae-backbone must be one of"),
])
def test_bad_vaegan_settings_fail_validation(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(model="vaegan", **fields).validate()


def test_a_layer_the_critic_lacks_is_refused_before_training():
    with pytest.raises(ValueError, match="--vae-layer 4: this critic has feature layers 1..3"):
        tiny_session(vae_backbone="mlp", vae_layer=4)


def test_defaults_follow_the_backbone():
    mlp = TrainConfig(model="vaegan").validate()
    dcgan = TrainConfig(model="vaegan", vae_backbone="dcgan").validate()
    assert (mlp.width, mlp.batch_size) == (TrainConfig(model="mlp").validate().width, 512)
    assert (dcgan.width, dcgan.batch_size) == (64, 64)
    assert mlp.vae_layer is not None and mlp.vae_gamma is not None
    assert TrainConfig(model="mlp").validate().vae_layer is None  # not a VAE-GAN: nothing to set


@pytest.fixture(scope="module")
def conditional_vaegan(tmp_path_factory):
    """A few iterations of a conditional MLP VAE-GAN on the embedded digits (its checkpoint)."""
    out = tmp_path_factory.mktemp("vaegan")
    train(TrainConfig(model="vaegan", conditional=True, width=8, batch_size=64, iterations=30, progress=False,
                      fid_samples=0, ema=0.0, out=str(out)))
    return out / "checkpoint.pt"


@pytest.mark.slow
def test_encode_and_decode_round_trip_through_the_commands(conditional_vaegan, tmp_path):
    codes = tmp_path / "codes.npz"
    assert cli(["encode", "--ckpt", str(conditional_vaegan), "--count", "20", "--out", str(codes)]) == 0
    with np.load(codes) as data:
        z, log_var, labels = (torch.from_numpy(data[k]) for k in ("z", "log_var", "labels"))
    test_images = load_dataset("mnist5k", split="test").images[:20]
    mu, expected_log_var = encode_images(conditional_vaegan, test_images, labels)
    torch.testing.assert_close(z, mu)
    torch.testing.assert_close(log_var, expected_log_var)
    assert cli(["decode", "--ckpt", str(conditional_vaegan), "--codes", str(codes), "--out",
                str(tmp_path / "decoded.npz")]) == 0
    with np.load(tmp_path / "decoded.npz") as data:
        pixels, decoded_labels = data["images"], data["labels"]
    assert pixels.shape == (20, 28, 28, 1) and pixels.dtype == np.uint8
    assert np.array_equal(decoded_labels, labels.numpy())
    decoded = decode_codes(conditional_vaegan, mu, labels)
    expected = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert (decoded - expected).abs().max() <= 1 / 127.5  # the .npz holds the decoded images, rounded to 8 bits
    assert cli(["decode", "--ckpt", str(conditional_vaegan), "--codes", str(codes), "--out",
                str(tmp_path / "decoded.png")]) == 0
    assert (tmp_path / "decoded.png").stat().st_size > 0


@pytest.mark.slow
def test_encode_refuses_a_model_without_an_encoder_and_bad_codes(conditional_vaegan, tmp_path, capsys):
    plain = tmp_path / "gan"
    train(TrainConfig(width=4, batch_size=64, iterations=2, progress=False, fid_samples=0, out=str(plain)))
    assert cli(["encode", "--ckpt", str(plain / "checkpoint.pt"), "--out", str(tmp_path / "c.npz")]) == 2
    assert "holds no encoder" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", z=np.zeros((3, 7), dtype=np.float32), labels=np.zeros(3, dtype=np.int64))
    assert cli(["decode", "--ckpt", str(conditional_vaegan), "--codes", str(tmp_path / "bad.npz")]) == 2
    assert "codes must be (N, 100)" in capsys.readouterr().err
    np.savez(tmp_path / "nolabels.npz", z=np.zeros((3, 100), dtype=np.float32))
    assert cli(["decode", "--ckpt", str(conditional_vaegan), "--codes", str(tmp_path / "nolabels.npz")]) == 2
    assert "give each code's class" in capsys.readouterr().err


@pytest.mark.slow
def test_edit_uses_the_vaegan_own_encoder_and_steps_zero_decode_its_mean(conditional_vaegan, tmp_path):
    report = run_edit(conditional_vaegan, tmp_path / "edit", count=20, steps=0, progress=False,
                      strengths=(-1.0, 1.0))
    assert report["encoder"] is True and report["encoder_file"] is None
    assert "VAE-GAN" in report["encoder_training"]["kind"]
    images = load_dataset("mnist5k", split="test").images[:20]
    labels = load_dataset("mnist5k", split="test").labels[:20]
    mu, _ = encode_images(conditional_vaegan, images, labels)
    recon = decode_codes(conditional_vaegan, mu, labels)
    assert report["reconstruction"]["pixel_mse"] == pytest.approx(float((recon - images).pow(2).mean()), rel=1e-5)
    assert report["encode_seconds"] > 0 and 0 <= report["class_edit"]["success_random_code"] <= 1


@pytest.mark.slow
def test_sampling_commands_work_on_a_vaegan_unchanged(conditional_vaegan, tmp_path):
    assert cli(["sample", "--ckpt", str(conditional_vaegan), "--out", str(tmp_path / "s.png")]) == 0
    assert cli(["augment", "--ckpt", str(conditional_vaegan), "--count", "12", "--out", str(tmp_path / "a.npz")]) == 0
    assert cli(["interpolate", "--ckpt", str(conditional_vaegan), "--out", str(tmp_path / "w.png")]) == 0
    with np.load(tmp_path / "a.npz") as data:
        assert data["images"].shape == (12, 28, 28, 1)
