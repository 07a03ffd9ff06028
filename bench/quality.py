"""Time to quality: FID, precision and recall after 1, 2 and 5 minutes of training, for recipes and peers.

    ganforge bench quality --out bench/results/DATE_quality-cpu/quality.json [--recipes a,b] [--peers a,b]
                           [--marks 60,120,300] [--fid-samples 2000] [--device cpu|cuda]

A user waits in minutes, not images per second, so this measures quality against training time. Every
contender trains on the embedded MNIST-5k train split and is scored by the project's FID (the embedded digit
classifier's features; 2000 generated digits against the 500 held-out test digits) at each time mark. The
clock counts training only: each evaluation pauses it. Improved precision and recall (k = 3, on the same
features), the class shares and the classes found come with each FID.

Contenders:
- recipes: the user recipes of engine.recipes (`ganforge train --recipe NAME`), trained by the engine itself (the
  experiment grids of the recipe and speedrun searches run the same measurement: bench/studies/quality_grid.py);
- peers: PyTorch-GAN's `wgan_gp` and `dcgan` models (github.com/eriklindernoren/PyTorch-GAN) with that
  repository's default settings, rebuilt here from its description (layers, losses, optimiser, batch, update
  order) and trained on the same data in the same process; nothing of theirs is imported.
"""
import time

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from ..engine.config import TrainConfig
from ..engine.data import load_dataset
from ..engine.metrics.classifier import class_shares_of
from ..engine.metrics.fid import FIDScorer
from ..engine.sampling import generate
from ..engine.metrics.scores import isolated_pixels, precision_recall
from ..engine.provenance import provenance
from ..engine.recipes import RECIPES, recipe_settings
from ..engine.session import build_session, run_iteration
from .results import device_name

SCHEMA = "ganforge-quality/1"
MARKS_S = (60, 120, 300)

SHIPPED = "default"
# The rows `ganforge bench quality` trains: the user recipes of engine.recipes, by name (default, textbook, ...).
# The experiment grids of the recipe and speedrun searches live with the studies (bench/studies/quality_grid.py).
RECIPE_ROWS = {name: recipe_settings(name) for name in RECIPES}


# ----------------------------------------------------------------------------------------------------------
# Contenders: one training iteration per step(), and the generator to score

class RecipeTrainee:
    """A ganforge configuration, trained through the engine's own session and steps."""

    kind = "recipe"

    def __init__(self, name, settings, seed=0, device="cpu"):
        self.name = name
        self.cfg = TrainConfig(**{**settings, "progress": False, "fid_samples": 0, "seed": seed, "device": device,
                                  "iterations": 10**9}).validate()
        self.session = build_session(self.cfg)
        self.iteration = 0

    def step(self):
        run_iteration(self.session, self.iteration)
        self.iteration += 1

    def samples(self, n):
        state = self.session.state
        return generate(state.sampling_generator(), n, self.cfg.z_dim, self.session.device)[0]

    def describe(self):
        return {k: v for k, v in self.cfg.to_dict().items() if k not in ("iterations", "out", "progress")}


def _pytorch_gan_init(module):
    """That repository's weights_init_normal: conv weights N(0, 0.02); BatchNorm weights N(1, 0.02), bias 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class PeerTrainee:
    """Common loop of the peer models: shuffled epochs over the training images, batch 64, Adam(2e-4, 0.5, 0.999)."""

    kind = "peer"
    z_dim = 100
    batch_size = 64

    def __init__(self, images, seed, device):
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.order, self.cursor = torch.randperm(len(images)), 0
        self.G, self.D = self.build()
        self.G.to(self.device)
        self.D.to(self.device)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def next_batch(self):
        """The next batch of a shuffled epoch; the last partial batch of an epoch is used as it is (DataLoader)."""
        if self.cursor >= len(self.order):
            self.order, self.cursor = torch.randperm(len(self.images)), 0
        idx = self.order[self.cursor:self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return self.images[idx.to(self.device)]

    def z(self, n):
        return torch.randn(n, self.z_dim, device=self.device)

    def samples(self, n):
        class Unconditional(nn.Module):  # the engine's sampler calls G(z, labels)
            def __init__(self, G):
                super().__init__()
                self.G = G

            def forward(self, z, labels=None):
                return self.G(z)

        return generate(Unconditional(self.G), n, self.z_dim, self.device)[0]

    def describe(self):
        return {"source": "PyTorch-GAN implementations/" + self.name, "batch_size": 64, "lr": 2e-4,
                "betas": [0.5, 0.999], **self.settings}


class PyTorchGANWGANGP(PeerTrainee):
    """PyTorch-GAN's wgan_gp: MLP G 100 -> 128 -> 256 -> 512 -> 1024 -> 784 (LeakyReLU 0.2, BatchNorm with
    eps 0.8 from the second layer, tanh), MLP critic 784 -> 512 -> 256 -> 1; lambda 10, n_critic 5 (G steps once
    every fifth batch), default PyTorch initialisation."""

    name = "wgan_gp"
    settings = {"n_critic": 5, "lambda_gp": 10, "image_size": 28}

    def build(self):
        def block(n_in, n_out, normalize=True):
            layers = [nn.Linear(n_in, n_out)]
            if normalize:
                layers.append(nn.BatchNorm1d(n_out, 0.8))
            return layers + [nn.LeakyReLU(0.2)]

        G = nn.Sequential(*block(100, 128, normalize=False), *block(128, 256), *block(256, 512), *block(512, 1024),
                          nn.Linear(1024, 28 * 28), nn.Tanh(), nn.Unflatten(1, (1, 28, 28)))
        D = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 512), nn.LeakyReLU(0.2), nn.Linear(512, 256),
                          nn.LeakyReLU(0.2), nn.Linear(256, 1))
        self.batches = 0
        return G, D

    def step(self):
        real = self.next_batch()
        fake = self.G(self.z(real.shape[0]))
        alpha = torch.rand(real.shape[0], 1, 1, 1, device=self.device)
        mix = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.D(mix).sum(), mix, create_graph=True)
        penalty = ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
        d_loss = -self.D(real).mean() + self.D(fake.detach()).mean() + 10 * penalty
        self.opt_d.zero_grad()
        d_loss.backward()
        self.opt_d.step()
        self.batches += 1
        if self.batches % 5 == 0:
            g_loss = -self.D(self.G(self.z(real.shape[0]))).mean()
            self.opt_g.zero_grad()
            g_loss.backward()
            self.opt_g.step()


class PyTorchGANDCGAN(PeerTrainee):
    """PyTorch-GAN's dcgan at its default 32x32 (digits resized): G dense to 128x8x8, two upsample + 3x3 conv
    blocks (BatchNorm eps 0.8, LeakyReLU 0.2), 3x3 conv to one channel, tanh; D four stride-2 3x3 conv blocks
    16/32/64/128 (LeakyReLU, Dropout2d 0.25, BatchNorm on the middle two), dense, sigmoid; binary cross-entropy,
    G updated before D on every batch; normal(0, 0.02) initialisation."""

    name = "dcgan"
    settings = {"image_size": 32}

    def build(self):
        G = nn.Sequential(
            nn.Linear(100, 128 * 8 * 8), nn.Unflatten(1, (128, 8, 8)), nn.BatchNorm2d(128),
            nn.Upsample(scale_factor=2), nn.Conv2d(128, 128, 3, 1, 1), nn.BatchNorm2d(128, 0.8), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2), nn.Conv2d(128, 64, 3, 1, 1), nn.BatchNorm2d(64, 0.8), nn.LeakyReLU(0.2),
            nn.Conv2d(64, 1, 3, 1, 1), nn.Tanh())

        def block(n_in, n_out, bn):
            layers = [nn.Conv2d(n_in, n_out, 3, 2, 1), nn.LeakyReLU(0.2), nn.Dropout2d(0.25)]
            return layers + ([nn.BatchNorm2d(n_out, 0.8)] if bn else [])

        D = nn.Sequential(*block(1, 16, False), *block(16, 32, True), *block(32, 64, True), *block(64, 128, False),
                          nn.Flatten(), nn.Linear(128 * 2 * 2, 1), nn.Sigmoid())
        G.apply(_pytorch_gan_init)
        D.apply(_pytorch_gan_init)
        return G, D

    def step(self):
        real = self.next_batch()
        ones = torch.ones(real.shape[0], 1, device=self.device)
        fake = self.G(self.z(real.shape[0]))
        g_loss = F.binary_cross_entropy(self.D(fake), ones)
        self.opt_g.zero_grad()
        g_loss.backward()
        self.opt_g.step()
        d_loss = 0.5 * (F.binary_cross_entropy(self.D(real), ones)
                        + F.binary_cross_entropy(self.D(fake.detach()), torch.zeros_like(ones)))
        self.opt_d.zero_grad()
        d_loss.backward()
        self.opt_d.step()


PEERS = {"pytorch-gan-wgan_gp": PyTorchGANWGANGP, "pytorch-gan-dcgan": PyTorchGANDCGAN}


def make_trainee(name, seed=0, device="cpu", rows=None):
    """The contender ``name``: a row of ``rows`` (name -> settings; default the user recipes) or a peer."""
    rows = RECIPE_ROWS if rows is None else rows
    if name in rows:
        return RecipeTrainee(name, rows[name], seed, device)
    if name in PEERS:
        size = PEERS[name].settings["image_size"]
        images = load_dataset("mnist5k", split="train", image_size=None if size == 28 else size).images
        return PEERS[name](images, seed, device)
    raise ValueError(f"unknown contender {name!r}; expected a recipe {tuple(rows)} or a peer {tuple(PEERS)}")


# ----------------------------------------------------------------------------------------------------------
# The measurement

def sample_scores(scorer, images):
    """FID, improved precision and recall and the class shares of one set of samples, from one backbone pass; and
    the isolated ink pixels per image (salt noise)."""
    features = scorer.features(images)
    fid = scorer.score_fake(features=features)
    pr = precision_recall(scorer.real.pool, features.pool) if fid == fid else {
        "improved_precision": float("nan"), "improved_recall": float("nan")}
    return {"fid": fid, **pr, "isolated_pixels": isolated_pixels(images),
            **class_shares_of(features.logits.argmax(dim=1).cpu())}


def fid_curve(trainee, marks_s, scorer, fid_samples=2000, progress=True, device="cpu"):
    """Train ``trainee`` until each time mark (training seconds) and score it there: a list of points.

    On CUDA every step is waited for before the clock is read, so the seconds are the device's, not the
    launches'."""
    on_cuda = torch.device(device).type == "cuda"
    points, trained_s, steps = [], 0.0, 0
    bar = tqdm(total=max(marks_s), desc=getattr(trainee, "name", "train"), unit="s", disable=not progress,
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s")
    for mark in sorted(marks_s):
        while trained_s < mark:
            start = time.perf_counter()
            trainee.step()
            if on_cuda:
                torch.cuda.synchronize()
            steps += 1
            elapsed = time.perf_counter() - start
            trained_s += elapsed
            bar.update(elapsed)
        point = {"mark_s": mark, "train_seconds": round(trained_s, 2), "iterations": steps,
                 **sample_scores(scorer, trainee.samples(fid_samples))}
        points.append(point)
        bar.set_postfix(fid=f"{point['fid']:.1f}")
    bar.close()
    return points


def measure_curves(names, marks_s=MARKS_S, fid_samples=2000, seed=0, device="cpu", progress=True, log=print,
                   rows=None):
    """A FID curve per contender (see make_trainee for ``rows``), beside the real-data floor: the results dict."""
    scorer = FIDScorer("mnist", device=device)
    scorer.set_real(load_dataset("mnist5k", split="test").images)
    floor_pool = load_dataset("mnist5k", split="train").images
    perm = torch.randperm(len(floor_pool), generator=torch.Generator().manual_seed(1))[:fid_samples]
    floor = sample_scores(scorer, floor_pool[perm])
    results = {"schema": SCHEMA, "device": device_name(device), **provenance(),
               "marks_s": list(marks_s), "fid_samples": fid_samples, "seed": seed, "threads": torch.get_num_threads(),
               "fid_real_floor": floor["fid"], "improved_precision_real_floor": floor["improved_precision"],
               "improved_recall_real_floor": floor["improved_recall"],
               "isolated_pixels_real_floor": floor["isolated_pixels"], "curves": []}
    for name in names:
        trainee = make_trainee(name, seed, device, rows)
        trainee.name = name
        points = fid_curve(trainee, marks_s, scorer, fid_samples, progress, device)
        results["curves"].append({"name": name, "kind": trainee.kind, "settings": trainee.describe(),
                                  "points": points})
        log(f"{name}: " + ", ".join(f"{p['mark_s']} s FID {p['fid']:.1f}" for p in points))
    return results


def markdown_table(results):
    marks = results["marks_s"]
    lines = ["| contender | kind | " + " | ".join(f"FID @ {m // 60 if m % 60 == 0 else m} "
                                                 f"{'min' if m % 60 == 0 else 's'}" for m in marks)
             + " | precision / recall @ end | isolated pixels / image @ end | classes found @ end "
               "| class shares min-max @ end |",
             "|---|---|" + "---:|" * len(marks) + "---:|---:|---:|---|"]
    for curve in results["curves"]:
        end = curve["points"][-1]
        pr = (f"{end['improved_precision']:.2f} / {end['improved_recall']:.2f}" if "improved_precision" in end
              else "-")  # files made before precision/recall were measured
        speckle = f"{end['isolated_pixels']:.2f}" if "isolated_pixels" in end else "-"
        lines.append(f"| {curve['name']} | {curve['kind']} | "
                     + " | ".join(f"{p['fid']:.1f}" for p in curve["points"])
                     + f" | {pr} | {speckle} | {end['classes_found']} | {end['min_class_share']:.1%}-{end['max_class_share']:.1%} |")
    return "\n".join(lines) + "\n"


def contender_names(recipes, peers, groups=None):
    """The contenders of --recipes and --peers, in order, with a group's name (a key of ``groups``) expanded."""
    groups = groups or {}
    names = []
    for name in (n.strip() for n in f"{recipes},{peers}".split(",")):
        names += list(groups[name]) if name in groups else [name] if name else []
    return names


def add_quality_arguments(parser, recipes_default, recipes_help):
    """The flags of a time-to-quality run (the study of bench/studies/ takes the same ones)."""
    parser.add_argument("--recipes", default=recipes_default, help=recipes_help)
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated peer models ('' for none)")
    parser.add_argument("--marks", default=",".join(map(str, MARKS_S)), help="training seconds to score at")
    parser.add_argument("--fid-samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")


def checked_contenders(args, rows, groups=None):
    """(contender names, time marks) of the parsed flags; a bad flag raises ValueError saying which."""
    names = contender_names(args.recipes, args.peers, groups)
    marks = tuple(int(m) for m in args.marks.split(",") if m.strip())
    if not names or not marks or min(marks) <= 0 or args.fid_samples < 2:
        raise ValueError("give at least one contender, positive --marks and --fid-samples >= 2")
    unknown = [name for name in names if name not in rows and name not in PEERS]
    if unknown:
        raise ValueError(f"unknown contender {unknown[0]!r}; recipes {tuple(rows)}, peers {tuple(PEERS)}")
    return names, marks


def add_arguments(parser):
    add_quality_arguments(parser, ",".join(RECIPE_ROWS),
                          "comma-separated user recipes (ganforge train --recipe NAME); default: all of them")


def run(args):
    """`ganforge bench quality`: defaults --device cpu (cuda: the recipes run with CUDA graphs),
    --out runs/bench/quality-<device>.json."""
    from .harness import finish

    names, marks = checked_contenders(args, RECIPE_ROWS)
    device = args.device or "cpu"
    results = measure_curves(names, marks, args.fid_samples, args.seed, device=device, progress=not args.no_progress)
    finish(args, results, f"runs/bench/quality-{device}.json", markdown_table)
    return 0
