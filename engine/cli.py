"""The engine's subcommands of `ganforge`: train, sample, fid, interpolate, augment.

Each takes its argv and returns an exit code; ganforge.cli dispatches to them.
"""
import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

from .config import TrainConfig, field_type, load_config_file

# Flags whose value is a boolean switch rather than a typed value.
_BOOL_FLAGS = {"conditional": "train a conditional GAN (class labels into G and D)",
               "progress": "show the progress bar (--no-progress hides it)",
               "tensorboard": "also write scalars, sample grids and FID to OUT/tensorboard (needs tensorboard)"}
_HELP = {
    "model": "mlp (the textbook MLP GAN) or dcgan",
    "dataset": "mnist5k (embedded), ring8, grid25, mnist-idx, cifar10, folder, npy",
    "data_path": "file or folder for mnist-idx, cifar10, folder and npy datasets",
    "loss": "ns (non-saturating), minimax, wgan, hinge",
    "penalty": "none, wgan-gp (gradient penalty on interpolates) or r1 (on reals)",
    "penalty_every": "lazy regularisation interval in D steps",
    "clip": "WGAN weight clipping of D's parameters to [-clip, clip]",
    "n_critic": "D steps per G step",
    "ema": "decay of the EMA of G (e.g. 0.999); 0 disables",
    "iterations": "training iterations, each n_critic D steps and one G step (--steps is an alias)",
    "precision": "fp32, bf16, fp16 or auto (bf16 on CUDA, fp32 on CPU)",
    "graphs": "capture D and G steps in CUDA graphs: auto (on with CUDA), on, off",
    "kernels": "fused ops: auto (Triton on CUDA), triton, ref (plain PyTorch reference)",
    "fid_samples": "generated images scored by FID at the end (0 skips)",
    "inception_weights": "local Inception weights file for --fid-backbone inception",
    "keep_checkpoints": "keep the newest K checkpoint-NNNNNN.pt files (checkpoint.pt links the newest)",
    "on_nan": "a non-finite loss or weight: stop (keep the last good checkpoint) or rollback to it with the "
              "learning rates halved",
    "max_rollbacks": "--on-nan rollback: at most this many rollbacks before stopping",
}


# Older spellings a flag still answers to.
_ALIASES = {"iterations": ("--steps",)}


def add_train_args(parser):
    """One flag per TrainConfig field, named like the field with dashes, and --config FILE.

    Values from --config become the flags' defaults, so flags given on the command line override the file.
    """
    defaults = TrainConfig()
    parser.add_argument("--config", metavar="FILE",
                        help="TOML or JSON file of settings (a run's config.json repeats it); flags override it")
    for f in fields(TrainConfig):
        flags = ["--" + f.name.replace("_", "-"), *_ALIASES.get(f.name, ())]
        default = getattr(defaults, f.name)
        if f.name in _BOOL_FLAGS:
            parser.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                                help=_BOOL_FLAGS[f.name])
            continue
        parser.add_argument(*flags, dest=f.name, type=field_type(f.name), default=default,
                            help=_HELP.get(f.name, f"default: {default}"))
    return parser


def parse_train_args(parser, argv):
    """Parse ``argv``; a --config file's settings first become the defaults that the flags override."""
    known, _ = parser.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**load_config_file(known.config))
    return parser.parse_args(argv)


def config_from_args(args):
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)}).validate()


def train_command(argv):
    parser = add_train_args(argparse.ArgumentParser(prog="ganforge train", description="Train a GAN."))
    parser.add_argument("--resume", metavar="PATH",
                        help="continue from a checkpoint file, or from a run folder's newest loadable checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in --out (without it, a used --out is refused)")
    args = parse_train_args(parser, argv)
    from .trainer import TrainingStopped, train

    try:
        summary = train(config_from_args(args), resume=args.resume, overwrite=args.overwrite)
    except TrainingStopped as stop:  # diverged or interrupted: the outputs are consistent; one line, no traceback
        print(f"ganforge train: {stop}", file=sys.stderr)
        return stop.exit_code
    shown = {k: summary[k] for k in ("fid", "fid_real_floor", "iterations", "images_per_sec", "device") if k in summary}
    print(json.dumps(shown, indent=2))
    print(f"outputs in {args.out}")
    return 0


def sample_command(argv):
    parser = argparse.ArgumentParser(prog="ganforge sample", description="Write a sample grid from a checkpoint.")
    parser.add_argument("--ckpt", required=True, help="checkpoint.pt written by ganforge train")
    parser.add_argument("--out", default="samples.png", help="PNG to write")
    parser.add_argument("-n", "--num", type=int, default=64, help="number of samples")
    parser.add_argument("--label", type=int, default=None, help="class for a conditional model (default: all)")
    parser.add_argument("--no-ema", action="store_true", help="sample from G itself, not its EMA")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    check_output_file("--out", args.out)
    from .evaluate import sample_grid

    path = sample_grid(args.ckpt, args.out, args.num, args.label, not args.no_ema, args.seed, args.device)
    print(f"wrote {path}")
    return 0


def fid_command(argv):
    parser = argparse.ArgumentParser(prog="ganforge fid", description="Score a checkpoint's generator by FID.")
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--samples", type=int, default=2000, help="generated images to score")
    parser.add_argument("--no-ema", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json-out", help="also write the scores to this JSON file")
    args = parser.parse_args(argv)
    if args.samples < 2:
        raise ValueError(f"--samples must be >= 2 (FID compares two sets' covariances), got {args.samples}")
    if args.json_out:
        check_output_file("--json-out", args.json_out)
    from .evaluate import score_checkpoint
    from .io import atomic_write_json, strict_json

    scores = score_checkpoint(args.ckpt, args.samples, not args.no_ema, args.device)
    print(strict_json(scores, indent=2))
    if args.json_out:
        atomic_write_json(args.json_out, scores)
    return 0


def check_output_file(option, path):
    """An output file's folder must exist and be writable, and the path must not be a folder: checked before work."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file name")
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ValueError(f"{option} {path}: the folder {folder} {what}")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{option} {path}: the folder {folder} is not writable")


def _checkpoint_parser(prog, description):
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--ckpt", required=True, help="checkpoint.pt written by ganforge train")
    parser.add_argument("--no-ema", action="store_true", help="use G itself, not its EMA")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    return parser


def interpolate_command(argv):
    parser = _checkpoint_parser("ganforge interpolate", "Walk G's latent space: each row goes smoothly between "
                                                         "two random codes (a conditional model keeps its class).")
    parser.add_argument("--out", default="latent_walk.png", help="PNG to write")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--per-row", "--steps", dest="per_row", type=int, default=10, help="images per row")
    args = parser.parse_args(argv)
    check_output_file("--out", args.out)
    from .evaluate import latent_walk

    path = latent_walk(args.ckpt, args.out, args.rows, args.per_row, not args.no_ema, args.seed, args.device)
    print(f"wrote {path}")
    return 0


def augment_command(argv):
    parser = _checkpoint_parser("ganforge augment", "Write generated images (and labels, for a conditional "
                                                     "model) to an .npz, as extra training data.")
    parser.add_argument("--out", default="synthetic.npz", help=".npz to write (keys images, labels)")
    parser.add_argument("--count", type=int, default=1000, help="images to generate")
    parser.add_argument("--label", type=int, default=None, help="only this class (default: classes in turn)")
    args = parser.parse_args(argv)
    check_output_file("--out", args.out)
    from .evaluate import export_samples

    path, arrays = export_samples(args.ckpt, args.out, args.count, args.label, not args.no_ema, args.seed,
                                  args.device)
    print(f"wrote {path}: images {arrays['images'].shape}" + (f", labels {arrays['labels'].shape}"
                                                              if "labels" in arrays else ""))
    return 0
