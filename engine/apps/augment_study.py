"""Does adding a conditional GAN's samples to a small training set make a classifier better?

For each k (real images per class) and seed: draw a k-shot set from the train split, train a conditional GAN
on that set alone, then train the same classifier (same initialisation, same number of steps) on
  real                      the k-shot set alone
  real+shift                with random shifts (classic augmentation)
  real+gan                  with the GAN's samples making up a share of every batch
  real+shift+gan            both
  real+shift+gan-filtered   both, keeping only samples that the real+shift classifier of the same k-shot set
                            reads as their intended class with high confidence
and score each on the held-out split. Seeds pair the variants (same k-shot set, same GAN, same initial
weights), so differences are taken per seed and reported with a Student-t 95% confidence interval.
"""
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import check_seed
from ..data import DataError, Dataset, load_dataset, require_labels, to_unit_range
from ..devices import resolve_device
from ..io import atomic_write, atomic_write_text

VARIANTS = {  # name -> (shift, gan samples, confidence filter)
    "real": (False, False, False),
    "real+shift": (True, False, False),
    "real+gan": (False, True, False),
    "real+shift+gan": (True, True, False),
    "real+shift+gan-filtered": (True, True, True),
}
BASELINES = ("real", "real+shift")

# two-sided 95% quantiles of Student's t for 1..30 degrees of freedom
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_quantile_975(df):
    if df < 1:
        return float("nan")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964  # Cornish-Fisher expansion around the normal quantile, accurate to 1e-3 beyond 30
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def mean_ci(values):
    """Mean, sample standard deviation and 95% confidence interval of the mean (t distribution)."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return {"mean": mean, "std": None, "ci95": None, "n": len(values)}
    std = float(values.std(ddof=1))
    half = t_quantile_975(len(values) - 1) * std / math.sqrt(len(values))
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": len(values)}


@dataclass
class StudyConfig:
    dataset: str = "mnist5k"
    data_path: str | None = None
    image_size: int | None = None
    channels: int | None = None
    shots: tuple = (10, 50, 200)            # real images per class
    seeds: tuple = (0, 1, 2)
    variants: tuple = tuple(VARIANTS)
    classifier_steps: int = 600
    batch_size: int = 64
    lr: float = 2e-3
    gan_model: str = "mlp"
    gan_width: int = 32                     # DCGAN base width
    gan_iterations: int = 1500
    gan_penalty: str = "r1"                 # R1 on reals keeps the cGAN from ignoring z within a class
    gan_penalty_weight: float = 1.0
    gan_penalty_every: int = 4
    gan_samples_per_class: int = 500
    gan_fraction: float = 0.5               # share of each classifier batch drawn from the GAN's samples
    filter_confidence: float = 0.9
    test_limit: int | None = None           # score on the first N held-out images only (quick runs)
    out: str = "runs/augment-study"
    device: str = "auto"
    kernels: str = "auto"
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def validate(self):
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variants {unknown}; expected some of {tuple(VARIANTS)}")
        if not self.shots or min(self.shots) < 1:
            raise ValueError(f"--shots must be positive counts per class, got {self.shots}")
        if not self.seeds:
            raise ValueError("--seeds needs at least one seed")
        for seed in self.seeds:
            check_seed(seed, "--seeds")
        resolve_device(self.device)  # a device this machine lacks fails here, before any work
        for name in ("classifier_steps", "batch_size", "gan_iterations", "gan_samples_per_class", "gan_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.gan_fraction < 1:
            raise ValueError(f"--gan-fraction must be in (0, 1), got {self.gan_fraction}")
        if not 0 <= self.filter_confidence < 1:
            raise ValueError(f"--filter-confidence must be in [0, 1), got {self.filter_confidence}")
        return self


def study_sets(cfg):
    """(train, held-out) labelled image Datasets: the dataset's test split, or else a stratified fifth of the
    one set held out with a fixed seed."""
    kwargs = dict(image_size=cfg.image_size, channels=cfg.channels)
    try:
        train = load_dataset(cfg.dataset, cfg.data_path, split="train", **kwargs)
        test = load_dataset(cfg.dataset, cfg.data_path, split="test", **kwargs)
    except DataError as exc:
        if "no test split" not in str(exc):
            raise
        everything = require_labels(load_dataset(cfg.dataset, cfg.data_path, split="all", **kwargs))
        gen = torch.Generator().manual_seed(12345)
        held = torch.zeros(len(everything), dtype=torch.bool)
        for c in range(everything.num_classes):
            rows = (everything.labels == c).nonzero()[:, 0]
            rows = rows[torch.randperm(len(rows), generator=gen)]
            held[rows[:len(rows) // 5]] = True
        train = _subset(everything, ~held)
        test = _subset(everything, held)
    for data in (train, test):
        require_labels(data)
        if data.images.dim() != 4:
            raise DataError(f"the augmentation study trains an image classifier; dataset {cfg.dataset!r} holds "
                            f"{tuple(data.images.shape[1:])} points")
    _, c, h, w = train.images.shape
    if h != w or h < 8:
        raise DataError(f"the study's classifier needs square images of at least 8x8 pixels, got {h}x{w}; "
                        "pass --image-size")
    return train, test


def _subset(data, rows):
    return Dataset(data.pixels[rows], data.labels[rows], data.num_classes, data.name, data.path, data.class_names)


def k_shot(data, k, seed):
    """k images of every class, drawn with ``seed``; a class with fewer than k images is an error."""
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(data.num_classes):
        rows = (data.labels == c).nonzero()[:, 0]
        if len(rows) < k:
            raise DataError(f"class {c} has only {len(rows)} training images; cannot draw {k} per class")
        chosen.append(rows[torch.randperm(len(rows), generator=gen)[:k]])
    return _subset(data, torch.cat(chosen))


class ColourClassifier(torch.nn.Module):
    """The study's classifier for colour images (CIFAR-10's 32x32 and others, at least 8x8): three VGG-style stages
    of two 3x3 convolutions with BatchNorm and ReLU (32, 64, 128 channels), each halving the size, then a global
    average pool and one linear layer. About 0.29 M weights: wide enough for natural images, small enough for a
    CPU; the digit CNN (no normalisation, 16-64 channels) is built for strokes on a black ground."""

    def __init__(self, num_classes, channels=3):
        super().__init__()

        def stage(c_in, c_out):
            return [torch.nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), torch.nn.BatchNorm2d(c_out),
                    torch.nn.ReLU(), torch.nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                    torch.nn.BatchNorm2d(c_out), torch.nn.ReLU(), torch.nn.MaxPool2d(2)]

        self.body = torch.nn.Sequential(*stage(channels, 32), *stage(32, 64), *stage(64, 128),
                                        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.head = torch.nn.Linear(128, num_classes)

    def forward(self, x):
        return self.head(self.body(x.float()))


def is_colour(data):
    return data.data_shape[0] == 3


def new_classifier(data, seed):
    """The study's classifier, initialised from ``seed``: ColourClassifier for colour images, else the project's
    digit CNN shaped for the data."""
    from ..metrics.classifier import MNISTClassifier

    torch.manual_seed(seed)
    c, h, _ = data.data_shape
    if is_colour(data):
        return ColourClassifier(data.num_classes, channels=c)
    return MNISTClassifier(channels=c, num_classes=data.num_classes, image_size=h)


def classifier_name(data):
    return "colour CNN (3 VGG-style stages, BatchNorm), shift + horizontal flip" if is_colour(data) else \
        "digit CNN (3 conv blocks), shift"


def fit(cfg, data, seed, shift, extra=None, desc="classifier"):
    """One classifier of the study, trained deterministically from ``seed``. The shift variants of colour images
    also flip them horizontally (CIFAR's classic augmentation; digits are never flipped)."""
    from ..metrics.train_classifier import fit_classifier

    model = new_classifier(data, seed)
    return fit_classifier(model, data.images, data.labels, cfg.classifier_steps, cfg.batch_size, cfg.lr, seed,
                          shift=shift, flip=shift and is_colour(data), extra=extra,
                          extra_fraction=cfg.gan_fraction if extra else 0.0, progress=cfg.progress, desc=desc)


def train_gan(cfg, kshot, seed, out_dir):
    """A conditional GAN trained on the k-shot set alone; returns its G (eval mode) and its run summary."""
    from ..checkpoint import load_generator
    from ..config import TrainConfig
    from ..trainer import train

    run = TrainConfig(model=cfg.gan_model, dataset=cfg.dataset, data_path=cfg.data_path, conditional=True,
                      width=cfg.gan_width, iterations=cfg.gan_iterations, batch_size=min(64, len(kshot)),
                      penalty=cfg.gan_penalty, penalty_weight=cfg.gan_penalty_weight,
                      penalty_every=cfg.gan_penalty_every,
                      seed=seed, device=cfg.device, kernels=cfg.kernels, out=str(out_dir), fid_samples=0,
                      log_every=max(1, cfg.gan_iterations // 10), sample_every=cfg.gan_iterations,
                      ckpt_every=cfg.gan_iterations, progress=cfg.progress, image_size=cfg.image_size,
                      channels=cfg.channels)
    summary = train(run, dataset=kshot)
    G, _, _ = load_generator(Path(out_dir) / "checkpoint.pt", device="cpu", use_ema=True, kernels=cfg.kernels)
    return G, summary


def gan_samples(G, num_classes, per_class, seed):
    from ..sampling import generate

    labels = torch.arange(num_classes).repeat(per_class)
    images, labels = generate(G, len(labels), G.z_dim, "cpu", num_classes, seed=seed, labels=labels)
    return images.clamp(-1, 1), labels


@torch.no_grad()
def confident(model, images, labels, threshold, batch_size=500):
    """Mask of the images that ``model`` reads as ``labels`` with probability >= threshold."""
    probs = torch.cat([model(images[i:i + batch_size]).softmax(1) for i in range(0, len(images), batch_size)])
    return probs[torch.arange(len(labels)), labels] >= threshold


def run_study(cfg):
    """Run every (k, seed, variant); write study.json and study.png into cfg.out; return the report."""
    from ..metrics.classifier import class_accuracy

    cfg.validate()
    start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    train_set, test_set = study_sets(cfg)
    test_x, test_y = to_unit_range(test_set.pixels[:cfg.test_limit]), test_set.labels[:cfg.test_limit]
    needs_gan = any(VARIANTS[v][1] for v in cfg.variants)
    runs = []
    jobs = [(k, seed) for k in cfg.shots for seed in cfg.seeds]
    for k, seed in tqdm(jobs, desc="study (k, seed)", unit="set", disable=not cfg.progress):
        kshot = k_shot(train_set, k, seed)
        row = {"k": k, "seed": seed, "accuracy": {}}
        samples = None
        if needs_gan:
            gan_start = time.perf_counter()
            G, summary = train_gan(cfg, kshot, seed, out / "gans" / f"k{k}-seed{seed}")
            samples = gan_samples(G, train_set.num_classes, cfg.gan_samples_per_class, seed)
            row["gan_seconds"] = time.perf_counter() - gan_start
        models = {}
        for variant in cfg.variants:
            shift, use_gan, filtered = VARIANTS[variant]
            extra = samples if use_gan else None
            if filtered:
                judge = models.get("real+shift")
                if judge is None:
                    judge = fit(cfg, kshot, seed, True, desc="real+shift (filter)")
                keep = confident(judge, *samples, cfg.filter_confidence)
                row["filter_kept"] = float(keep.float().mean())
                extra = (samples[0][keep], samples[1][keep]) if keep.any() else None
            model = fit(cfg, kshot, seed, shift, extra, desc=f"k={k} seed={seed} {variant}")
            models[variant] = model
            row["accuracy"][variant] = class_accuracy(model, test_x, test_y)["accuracy"]
        if samples is not None:  # how class-faithful the GAN's samples are, by the best real-only classifier
            best_real = models.get("real+shift", models.get("real"))
            if best_real is not None:
                row["gan_sample_label_agreement"] = class_accuracy(best_real, *samples)["accuracy"]
        runs.append(row)
    report = summarize(cfg, runs, len(train_set), len(test_x), time.perf_counter() - start)
    report["classifier"] = classifier_name(train_set)
    atomic_write_text(out / "study.json", json.dumps(report, indent=2) + "\n")
    plot_study(report, out / "study.png")
    return report


def summarize(cfg, runs, train_size, test_size, seconds):
    summary = {}
    for k in cfg.shots:
        rows = [r for r in runs if r["k"] == k]
        entry = {"variants": {}, "differences": {}}
        for v in cfg.variants:
            entry["variants"][v] = {**mean_ci([r["accuracy"][v] for r in rows]),
                                    "per_seed": [r["accuracy"][v] for r in rows]}
        for base in BASELINES:
            if base not in cfg.variants:
                continue
            for v in cfg.variants:
                if v != base:
                    entry["differences"][f"{v} - {base}"] = mean_ci(
                        [r["accuracy"][v] - r["accuracy"][base] for r in rows])
        gan_variants = [v for v in cfg.variants if VARIANTS[v][1]]
        if gan_variants:
            best = max(gan_variants, key=lambda v: entry["variants"][v]["mean"])
            entry["best_gan_variant"] = best
        if any("filter_kept" in r for r in rows):
            entry["filter_kept_mean"] = float(np.mean([r["filter_kept"] for r in rows]))
        if any("gan_sample_label_agreement" in r for r in rows):
            entry["gan_sample_label_agreement_mean"] = float(np.mean([r["gan_sample_label_agreement"]
                                                                       for r in rows]))
        summary[str(k)] = entry
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("progress", "extra")}
    settings.update(cfg.extra)
    return {"settings": settings, "train_pool_size": train_size, "held_out_size": test_size,
            "seconds": seconds, "torch": torch.__version__, "summary": summary, "runs": runs}


def plot_study(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shots = [int(k) for k in report["summary"]]
    variants = list(next(iter(report["summary"].values()))["variants"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, v in enumerate(variants):
        stats = [report["summary"][str(k)]["variants"][v] for k in shots]
        means = [s["mean"] for s in stats]
        errs = [[s["mean"] - s["ci95"][0] for s in stats], [s["ci95"][1] - s["mean"] for s in stats]] \
            if all(s["ci95"] for s in stats) else None
        # a small offset per variant keeps the error bars apart
        xs = [k * (1 + 0.04 * (i - (len(variants) - 1) / 2)) for k in shots]
        ax.errorbar(xs, means, yerr=errs, marker="o", capsize=3, label=v)
    ax.set_xscale("log")
    ax.set_xticks(shots)
    ax.set_xticklabels([str(k) for k in shots])
    ax.set_xlabel("real training images per class (k)")
    ax.set_ylabel(f"held-out accuracy ({report['held_out_size']} images)")
    ax.set_title("Classifier accuracy by training set (mean, 95% CI over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return path
