"""Train the digit classifier behind the default FID backbone and write its weights.

    python -m ganforge.engine.metrics.train_classifier --out engine/metrics/assets/mnist_classifier.pt

Trains on the MNIST-5k train split only (the test split stays unseen), reports test accuracy, writes the
weights atomically and prints the SHA-256 to paste into MNIST_CLASSIFIER_SHA256 in engine/metrics/classifier.py.
Deterministic: fixed seed, deterministic algorithms, one CPU thread.
"""
import argparse
import hashlib
import io
import sys
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data import load_dataset
from .classifier import MNIST_CLASSIFIER_PATH, MNISTClassifier, class_accuracy
from ..io import atomic_write_bytes


def random_shift(x, gen, max_shift=2):
    """Translate each image by up to max_shift pixels, filling with background (-1): cheap augmentation."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=gen).tolist()
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])


def random_flip(x, gen):
    """Mirror each image left-right with probability 1/2 (for natural images; never for digits)."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def fit_classifier(model, images, labels, steps, batch_size=64, lr=2e-3, seed=0, shift=True, extra=None,
                   extra_fraction=0.0, progress=True, desc="classifier", flip=False):
    """Train ``model`` on (images, labels) for ``steps`` Adam steps with a one-cycle learning rate.

    Each epoch visits the images in a fresh seeded order (the last batch may be short). shift: random_shift
    every batch; flip: random_flip every batch too. extra: optional (images, labels) of a second source (e.g. a
    generator's samples), drawn at random to make up a share ``extra_fraction`` of every batch (the rest comes
    from ``images``). Randomness
    comes only from a generator seeded with ``seed`` (seed the model's initialisation yourself), so the same
    seeds give the same model on one thread with deterministic algorithms.
    """
    gen = torch.Generator().manual_seed(seed)
    n_extra = round(batch_size * extra_fraction) if extra is not None else 0
    n_real = batch_size - n_extra
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress, leave=False)
    model.train()
    done = 0
    while done < steps:
        order = torch.randperm(len(images), generator=gen)
        for i in range(0, len(images), n_real):
            idx = order[i:i + n_real]
            x, y = images[idx], labels[idx]
            if n_extra:
                pick = torch.randint(len(extra[0]), (n_extra,), generator=gen)
                x, y = torch.cat([x, extra[0][pick]]), torch.cat([y, extra[1][pick]])
            x = random_shift(x, gen) if shift else x
            x = random_flip(x, gen) if flip else x
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            bar.update(1)
            if done == steps:
                break
        bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    return model


def train(epochs=15, batch_size=64, lr=2e-3, seed=0, limit=None, progress=True):
    """Return (model, test accuracy). `limit` trains on the first `limit` images only (for quick checks)."""
    torch.manual_seed(seed)  # the model's initialisation
    train_set, test_set = load_dataset("mnist5k", split="train"), load_dataset("mnist5k", split="test")
    x, y = train_set.images[:limit], train_set.labels[:limit]
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    model = fit_classifier(MNISTClassifier(), x, y, steps, batch_size, lr, seed, progress=progress)
    return model, class_accuracy(model, test_set.images, test_set.labels)["accuracy"]


def serialize(model):
    """The state dict as bytes. Saved through a buffer so that the bytes do not depend on the file name."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(MNIST_CLASSIFIER_PATH), help="where to write the weights")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images (quick check)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    # one thread and deterministic kernels: the same seed gives the same weights on the same machine
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    model, test_acc = train(epochs=args.epochs, seed=args.seed, limit=args.limit, progress=not args.no_progress)
    data = serialize(model)
    atomic_write_bytes(args.out, data)
    digest = hashlib.sha256(data).hexdigest()
    print(f"test accuracy (MNIST-5k test split, 500 images): {test_acc:.4f}")
    print(f"wrote {args.out} ({len(data) / 1024:.0f} KiB) in {time.perf_counter() - start:.0f} s")
    print(f'MNIST_CLASSIFIER_SHA256 = "{digest}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
