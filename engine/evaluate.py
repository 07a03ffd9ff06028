"""Scoring and sampling a generator: FID against held-out real data, class accuracy, mode coverage, grids."""
import torch

from .data import DataError, load_dataset, mode_coverage
from .images import save_samples

MIXTURES = ("ring8", "grid25")
DIGIT_DATASETS = ("mnist5k", "mnist-idx")  # where the embedded digit classifier can judge classes


@torch.no_grad()
def generate(G, n, z_dim, device, num_classes=0, batch_size=500, seed=0, labels=None):
    """n samples from G (on the CPU, float32) and the labels they were asked for (None if unconditional)."""
    gen = torch.Generator().manual_seed(seed)
    if num_classes and labels is None:
        labels = torch.arange(n) % num_classes
    was_training = G.training
    G.eval()
    chunks = []
    for i in range(0, n, batch_size):
        z = torch.randn(min(batch_size, n - i), z_dim, generator=gen).to(device)
        y = labels[i:i + z.shape[0]].to(device) if labels is not None else None
        chunks.append(G(z, y).float().cpu())
    G.train(was_training)
    return torch.cat(chunks), labels


def reference_sets(cfg, seed=0):
    """(held-out real set, disjoint real pool): the test split and the train split where the dataset has both,
    else two disjoint random halves of the one set."""
    kwargs = dict(image_size=cfg.image_size, channels=cfg.channels, seed=cfg.seed)
    try:
        held_out = load_dataset(cfg.dataset, cfg.data_path, split="test", **kwargs).images
        pool = load_dataset(cfg.dataset, cfg.data_path, split="train", **kwargs).images
    except DataError:  # one-set datasets (folders, arrays) have no test split
        everything = load_dataset(cfg.dataset, cfg.data_path, split="train", **kwargs).images
        perm = torch.randperm(len(everything), generator=torch.Generator().manual_seed(seed))
        half = len(everything) // 2
        held_out, pool = everything[perm[:half]], everything[perm[half:]]
    return held_out, pool


def evaluate_generator(G, cfg, num_classes, device, n_samples, progress=False):
    """The end-of-training scores written into summary.json.

    fid: FID of n_samples generated images against the held-out real set.
    fid_real_floor: FID of as many real images, disjoint from the held-out set, against it — the score a
    perfect generator would get with these sample sizes.
    """
    if n_samples == 0:
        return {"fid": None, "fid_real_floor": None}
    if cfg.dataset in MIXTURES:
        fake, _ = generate(G, n_samples, cfg.z_dim, device, num_classes)
        return {"fid": None, "fid_real_floor": None, **mode_coverage(fake, cfg.dataset)}
    from .fid import FIDScorer, class_accuracy

    scorer = FIDScorer(cfg.fid_backbone, cfg.inception_weights, device)
    held_out, pool = reference_sets(cfg)
    n = min(n_samples, len(pool))
    scorer.set_real(held_out)
    fake, labels = generate(G, n, cfg.z_dim, device, num_classes)
    real_sample = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(1))[:n]]
    scores = {"fid": scorer.score_fake(fake), "fid_real_floor": scorer.score_fake(real_sample),
              "fid_samples": n, "fid_reference_size": len(held_out), "fid_backbone": cfg.fid_backbone}
    if num_classes and cfg.dataset in DIGIT_DATASETS and scorer.classifier is not None:
        scores["class_accuracy"] = class_accuracy(scorer.classifier, fake, labels)
    return scores


def sample_grid(ckpt_path, out_path, n=64, label=None, use_ema=True, seed=0, device="cpu"):
    from .checkpoint import load_generator

    G, cfg, num_classes = load_generator(ckpt_path, device, use_ema)
    if label is not None:
        if not num_classes:
            raise ValueError(f"--label needs a conditional model; {ckpt_path} is unconditional")
        if not 0 <= label < num_classes:
            raise ValueError(f"--label must be in [0, {num_classes}), got {label}")
    labels = torch.full((n,), label) if label is not None else None
    samples, _ = generate(G, n, cfg.z_dim, device, num_classes, seed=seed, labels=labels)
    nrow = num_classes if num_classes and label is None and num_classes <= 16 else None
    real = None
    if cfg.dataset in MIXTURES:
        real = load_dataset(cfg.dataset, split="test").images
    return save_samples(samples, out_path, nrow=nrow, real_points=real)


def score_checkpoint(ckpt_path, n_samples=2000, use_ema=True, device="cpu"):
    from .checkpoint import load_generator

    G, cfg, num_classes = load_generator(ckpt_path, device, use_ema)
    return evaluate_generator(G, cfg, num_classes, device, n_samples)
