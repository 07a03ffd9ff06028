"""engine.data.celeba: the official CelebA layout, its splits, the crop and resize, every malformed file, and a
training run on it."""
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganforge.cli import main
from ganforge.engine.data import DATASETS, DataError, load_dataset
from ganforge.engine.data.celeba import load_celeba

ATTRIBUTE_NAMES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young")
N = 24
PARTITION = [0] * 16 + [1] * 4 + [2] * 4  # images 1-16 train, 17-20 val, 21-24 test
NAMES = [f"{i:06d}.jpg" for i in range(1, N + 1)]
ATTRIBUTES = np.random.default_rng(1).choice(np.array([-1, 1], dtype=np.int8), size=(N, 40))


def write_celeba(root):
    """A small CelebA folder in the official formats: 178x218 JPEGs, the attribute and partition lists."""
    (root / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in NAMES:
        Image.fromarray(rng.integers(0, 256, size=(218, 178, 3), dtype=np.uint8)).save(root / "img_align_celeba" / name)
    # as the real file: a count, the names with a trailing space, values right-aligned in width 2 after a space
    rows = [name + "".join(f" {v:>2}" for v in values) for name, values in zip(NAMES, ATTRIBUTES)]
    (root / "list_attr_celeba.txt").write_text(f"{N}\n" + " ".join(ATTRIBUTE_NAMES) + " \n" + "\n".join(rows) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(NAMES, PARTITION)))
    return root


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return write_celeba(tmp_path_factory.mktemp("template") / "celeba")


@pytest.fixture
def celeba(template, tmp_path):
    return Path(shutil.copytree(template, tmp_path / "celeba"))


def by_hand(path, mode, size):
    """Center crop to the shorter side, then Pillow's bilinear resize: as float32 (C, H, W) in [-1, 1]."""
    with Image.open(path) as img:
        img = img.convert(mode).crop((0, 20, 178, 198)).resize((size, size), Image.Resampling.BILINEAR)
        pixels = np.array(img, dtype=np.uint8).reshape(size, size, -1)
    return torch.from_numpy(pixels).permute(2, 0, 1).float() / 127.5 - 1


def test_the_attribute_file_is_parsed_in_its_order(celeba):
    images, attributes, names = load_celeba(celeba, "all", None, None)
    assert images.dtype == np.uint8 and images.shape == (N, 64, 64, 3)  # 64 px by default
    assert attributes.dtype == np.int8 and np.array_equal(attributes, ATTRIBUTES)
    assert names == ATTRIBUTE_NAMES
    # the partition file's order does not matter; Kaggle's nested image folder is found
    part = celeba / "list_eval_partition.txt"
    part.write_text("".join(reversed(part.read_text().splitlines(keepends=True))))
    shutil.move(celeba / "img_align_celeba", celeba / "nested")
    (celeba / "img_align_celeba").mkdir()
    shutil.move(celeba / "nested", celeba / "img_align_celeba" / "img_align_celeba")
    again, attributes, _ = load_celeba(celeba, "all", None, None)
    assert np.array_equal(again, images) and np.array_equal(attributes, ATTRIBUTES)


def test_splits_are_the_partitions(celeba):
    every = load_dataset("celeba", celeba, split="all", image_size=8)
    train, test = (load_dataset("celeba", celeba, split=s, image_size=8) for s in ("train", "test"))
    assert (len(train), len(test), len(every)) == (16, 4, 24)  # val (17-20) is only in "all"
    assert torch.equal(train.pixels, every.pixels[:16]) and torch.equal(test.pixels, every.pixels[20:])
    assert torch.equal(train.attributes, torch.from_numpy(ATTRIBUTES[:16]))
    assert torch.equal(test.attributes, torch.from_numpy(ATTRIBUTES[20:]))


def test_load_dataset_crops_resizes_and_keeps_the_attributes(celeba):
    ds = load_dataset("celeba", celeba, split="test", image_size=32)
    assert ds.images.shape == (4, 3, 32, 32) and ds.pixels.dtype == torch.uint8
    assert float(ds.images.min()) >= -1 and float(ds.images.max()) <= 1
    assert ds.labels is None and ds.num_classes == 0 and ds.name == "celeba" and ds.path == str(celeba)
    assert ds.attributes.dtype == torch.int8 and ds.attributes.shape == (4, 40)
    assert ds.attribute_names == ATTRIBUTE_NAMES
    assert torch.equal(ds.images[1], by_hand(celeba / "img_align_celeba" / "000022.jpg", "RGB", 32))
    grey = load_dataset("celeba", celeba, split="test", image_size=16, channels=1)
    assert grey.images.shape == (4, 1, 16, 16)
    assert torch.equal(grey.images[0], by_hand(celeba / "img_align_celeba" / "000021.jpg", "L", 16))
    assert "celeba" in DATASETS


def rewrite(name, edit):
    """Edit one line (0-based) of a text file of the fixture: edit(line) -> new line, or None to drop it."""
    def mutate(root):
        path = root / name
        lines = path.read_text().splitlines()
        index, change = edit
        new = change(lines[index])
        lines[index:index + 1] = [] if new is None else [new]
        path.write_text("\n".join(lines) + "\n")
        return root
    return mutate


def remove(name):
    def mutate(root):
        path = root / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        return root
    return mutate


def replace_file(name, data):
    def mutate(root):
        (root / name).write_bytes(data(root / name))
        return root
    return mutate


ATTR, PART, IMG = "list_attr_celeba.txt", "list_eval_partition.txt", "img_align_celeba"
BAD = {
    "not a folder": (lambda r: r / ATTR, "", lambda r: f"{r / ATTR} is not a folder"),
    "no image folder": (remove(IMG), "", lambda r: f"{r} has no img_align_celeba folder"),
    "no attribute file": (remove(ATTR), "", lambda r: f"{r / ATTR} is missing"),
    "no partition file": (remove(PART), "", lambda r: f"{r / PART} is missing"),
    "empty attribute file": (replace_file(ATTR, lambda p: b""), "", lambda r: f"{r / ATTR}: the file is empty"),
    "count not a number": (rewrite(ATTR, (0, lambda s: "twenty-four")), "",
                           lambda r: f"{r / ATTR}: line 1 is 'twenty-four'; expected the number of images"),
    "39 names": (rewrite(ATTR, (1, lambda s: s.replace("Young", ""))), "",
                 lambda r: f"{r / ATTR}: line 2 has 39 names; expected the 40 attribute names"),
    "a name twice": (rewrite(ATTR, (1, lambda s: s.replace("Bangs", "Bald"))), "",
                     lambda r: f"{r / ATTR}: line 2 names attribute Bald twice"),
    "a row short": (rewrite(ATTR, (4, lambda s: s[:-3])), "", lambda r: f"{r / ATTR}: line 5 has 39 values"),
    "a value not -1/1": (rewrite(ATTR, (6, lambda s: s[:-2] + " 0")), "",
                         lambda r: f"{r / ATTR}: line 7 has the value '0'; expected -1 or 1"),
    "count disagrees": (rewrite(ATTR, (0, lambda s: "25")), "",
                        lambda r: f"{r / ATTR}: line 1 says 25 images but 24 rows follow"),
    "a name twice in the attributes": (rewrite(ATTR, (3, lambda s: s.replace("000002", "000001"))), "",
                                       lambda r: f"{r / ATTR}: line 4 lists 000001.jpg again (first on line 3)"),
    "a partition row not name digit": (rewrite(PART, (2, lambda s: "000003.jpg train")), "",
                                       lambda r: f"{r / PART}: line 3 is '000003.jpg train'; expected a file name"),
    "a partition row with three fields": (rewrite(PART, (2, lambda s: s + " 1")), "",
                                          lambda r: f"{r / PART}: line 3 is '000003.jpg 0 1'"),
    "partition 3": (rewrite(PART, (4, lambda s: "000005.jpg 3")), "",
                    lambda r: f"{r / PART}: line 5 puts 000005.jpg in partition 3; expected 0 (train)"),
    "a partition row missing": (rewrite(PART, (9, lambda s: None)), "",
                                lambda r: f"{r / PART}: lacks 000010.jpg, which {r / ATTR} lists"),
    "an extra partition row": (rewrite(PART, (23, lambda s: s + "\n000099.jpg 2")), "",
                               lambda r: f"{r / PART}: lists 000099.jpg (line 25), which {r / ATTR} does not"),
    "a partition row twice": (rewrite(PART, (1, lambda s: "000001.jpg 0")), "",
                              lambda r: f"{r / PART}: line 2 lists 000001.jpg again (first on line 1)"),
    "an image missing": (remove(f"{IMG}/000005.jpg"), "",
                         lambda r: f"{r / IMG / '000005.jpg'}: listed in {r / ATTR} but missing"),
    "an image unreadable": (replace_file(f"{IMG}/000003.jpg", lambda p: b"not a jpeg"), "",
                            lambda r: f"{r / IMG / '000003.jpg'}: not a readable image"),
    "an image truncated": (replace_file(f"{IMG}/000004.jpg", lambda p: p.read_bytes()[:2000]), "",
                           lambda r: f"{r / IMG / '000004.jpg'}: not a readable image"),
    "an empty split": (rewrite(PART, (23, lambda s: "000024.jpg 1")), "test",  # after 21-23 too, below
                       lambda r: f"{r / PART}: no image is in the test split (partition 2)"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_every_malformed_input_is_a_clear_data_error(celeba, case):
    mutate, split, expected = BAD[case]
    if case == "an empty split":
        for i in (20, 21, 22):
            rewrite(PART, (i, lambda s: s[:-1] + "1"))(celeba)
    path = mutate(celeba)
    with pytest.raises(DataError, match=re.escape(expected(celeba))):
        load_dataset("celeba", path, split=split or "all", image_size=8)


def test_dcgan_trains_on_celeba_from_the_command_line(celeba, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--dataset", "celeba", "--data-path", str(celeba), "--model", "dcgan", "--image-size", "32",
                 "--width", "8", "--iterations", "2", "--batch-size", "8", "--fid-samples", "0", "--kernels", "ref",
                 "--no-progress", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert (out / "checkpoint.pt").is_file() and (out / "samples_final.png").is_file()
