"""The engine's subcommands of `ganforge`: train, sample, fid, score, interpolate, augment and the applications.

Each takes its argv and returns an exit code; ganforge.cli dispatches to them.
"""
import argparse
import json
import os
import sys
from pathlib import Path

from ..engine.config import (FIELDS, GROUPS, RESOLVED_FIELDS, TrainConfig, default_text, field_type, flag,
                              load_config_file)


def field_help(name):
    """TrainConfig field ``name``'s help with its default (per model where it depends on the model). A field whose
    None is a real value says what it means in its help ("not set: ..."), so nothing is added there."""
    text = FIELDS[name].metadata["help"]
    if FIELDS[name].default is None and name not in RESOLVED_FIELDS:
        return text
    return f"{text} (default: {default_text(name)})"


def recipe_help():
    """--recipe's help: each recipe of the registry (engine.recipes) with its description."""
    from ..engine.recipes import RECIPES

    listing = "; ".join(f"{name}: {recipe.description}" for name, recipe in RECIPES.items())
    return f"start from a named recipe; --config and flags override it. {listing}"


def wrote(path, detail=""):
    """Tell the user what a command wrote; the command's exit code (0)."""
    print(f"wrote {path}{detail}")
    return 0


def add_train_args(parser):
    """One flag per TrainConfig field, named like the field with dashes, in the field's group; --recipe NAME and
    --config FILE. A bool field is a switch (--NAME / --no-NAME).

    A field whose default depends on the model defaults to None here (take the preset); values from --recipe and
    --config become the flags' defaults, so flags given on the command line override them.
    """
    settings = parser.add_argument_group("settings", "where the defaults come from")
    settings.add_argument("--recipe", metavar="NAME", help=recipe_help().replace("%", "%%"))
    settings.add_argument("--config", metavar="FILE",
                          help="TOML or JSON file of settings (a run's config.json repeats it); flags override it")
    groups = {name: parser.add_argument_group(name, description) for name, description in GROUPS.items()}
    for name, f in FIELDS.items():
        flags = [flag(name), *map(flag, f.metadata["aliases"])]
        kind = field_type(name)
        options = dict(action=argparse.BooleanOptionalAction) if kind is bool else dict(type=kind)
        action = groups[f.metadata["group"]].add_argument(*flags, dest=name, default=f.default, **options)
        # set after creation: BooleanOptionalAction appends its own default on some Python versions
        action.help = field_help(name).replace("%", "%%")
    return parser


def parse_train_args(parser, argv):
    """Parse ``argv``; a --recipe's settings, then a --config file's, first become the defaults that the flags
    override."""
    known, _ = parser.parse_known_args(argv)
    if known.recipe:
        from ..engine.recipes import recipe_settings

        parser.set_defaults(**recipe_settings(known.recipe))
    if known.config:
        parser.set_defaults(**load_config_file(known.config))
    return parser.parse_args(argv)


def config_from_args(args):
    return TrainConfig(**{name: getattr(args, name) for name in FIELDS}).validate()


def train_command(argv):
    parser = add_train_args(argparse.ArgumentParser(
        prog="ganforge train", description="Train a GAN. Every flag is optional; docs/flags.md lists them too.",
        usage="%(prog)s [--recipe NAME] [--config FILE] [--resume PATH] [--FLAG VALUE ...]"))
    parser.add_argument("--resume", metavar="PATH",
                        help="continue from a checkpoint file, or from a run folder's newest loadable checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in --out (without it, a used --out is refused)")
    parser.add_argument("--discard-newer", action="store_true",
                        help="resuming into its own folder from an older checkpoint: move the newer checkpoints and "
                             "the log into OUT/abandoned-NNNNNN/ (without it, such a resume is refused)")
    args = parse_train_args(parser, argv)
    from ..engine.stopping import TrainingStopped
    from ..engine.trainer import train

    cfg = config_from_args(args)
    warn_of_digit_backbone(cfg)
    try:
        summary = train(cfg, resume=args.resume, overwrite=args.overwrite, discard_newer=args.discard_newer)
    except TrainingStopped as stop:  # diverged or interrupted: the outputs are consistent; one line, no traceback
        # Under torchrun every rank stops alike, so rank 0 says why, once; a rank that lost the others (hard_exit)
        # says so itself, since rank 0 may be the one that is gone.
        if getattr(stop, "hard_exit", False) or os.environ.get("RANK", "0") == "0":
            print(f"ganforge train: {stop}", file=sys.stderr)
        if getattr(stop, "hard_exit", False):  # torchrun's other ranks are gone: do not wait on the process group
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(stop.exit_code)
        return stop.exit_code
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return 0
    shown = {k: summary[k] for k in ("fid", "fid_real_floor", "iterations", "images_per_sec", "device") if k in summary}
    print(json.dumps(shown, indent=2))
    print(f"outputs in {args.out}")
    return 0


def warn_of_digit_backbone(cfg):
    """Before a scored run on images the digit classifier was not trained on: one warning line (from rank 0), the
    same note summary.json records as fid_backbone_note."""
    from ..engine.data import MIXTURES
    from ..engine.metrics.classifier import digit_backbone_note

    scored = (cfg.fid_samples > 0 or cfg.fid_every > 0) and cfg.dataset not in MIXTURES
    note = digit_backbone_note(cfg.fid_backbone, cfg.dataset)
    if scored and note and os.environ.get("RANK", "0") == "0":
        print(f"ganforge train: warning: {note}", file=sys.stderr)


def sample_command(argv):
    parser = argparse.ArgumentParser(prog="ganforge sample", description="Write a sample grid from a checkpoint.")
    parser.add_argument("--ckpt", required=True, help="checkpoint.pt written by ganforge train")
    parser.add_argument("--out", default="samples.png", help="PNG to write")
    parser.add_argument("-n", "--num", type=int, default=64, help="number of samples")
    parser.add_argument("--label", type=int, default=None, help="class for a conditional model (default: all)")
    _add_attribute_settings(parser, "sample with")
    parser.add_argument("--no-ema", action="store_true", help="sample from G itself, not its EMA")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    check_device_and_seed(args)
    check_output_file("--out", args.out, reads=[("--ckpt", args.ckpt)])
    from ..engine.sampling import parse_attribute_settings, sample_grid

    settings = parse_attribute_settings(args.set)
    path = sample_grid(args.ckpt, args.out, args.num, args.label, not args.no_ema, args.seed, args.device, settings)
    return wrote(path)


def fid_command(argv):
    """`ganforge fid`: the checkpoint's FID and its real floor (`ganforge score --metrics fid`)."""
    return _score(argv, "ganforge fid", "Score a checkpoint's generator by FID.", fixed_metrics="fid")


def score_command(argv):
    """`ganforge score`: every metric of engine.metrics.scores for a checkpoint, each beside its real floor."""
    return _score(argv, "ganforge score", "Score a checkpoint's generator: FID, KID, IS, precision/recall, "
                  "density/coverage, MiFID, intra-class FID, each beside its real floor.")


def _score(argv, prog, description, fixed_metrics=None):
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--samples", type=int, default=2000, help="generated images to score")
    if fixed_metrics is None:
        parser.add_argument("--metrics", default="all", help=FIELDS["metrics"].metadata["help"])
    parser.add_argument("--no-ema", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fid-backbone", choices=FIELDS["fid_backbone"].metadata["choices"],
                        help="the features every metric compares (default: the run's own --fid-backbone)")
    parser.add_argument("--inception-weights", metavar="FILE",
                        help="local Inception weights file for --fid-backbone inception (default: the run's own)")
    parser.add_argument("--json-out", help="also write the scores to this JSON file")
    args = parser.parse_args(argv)
    if args.samples < 2:
        raise ValueError(f"--samples must be >= 2 (FID compares two sets' covariances), got {args.samples}")
    check_device_and_seed(args)
    if args.json_out:
        check_output_file("--json-out", args.json_out, reads=[("--ckpt", args.ckpt)])
    from ..engine.metrics.evaluate import score_checkpoint
    from ..engine.io import atomic_write_json, strict_json

    metrics = fixed_metrics or args.metrics
    scores = score_checkpoint(args.ckpt, args.samples, not args.no_ema, args.device, metrics=metrics,
                              backbone=args.fid_backbone, inception_weights=args.inception_weights)
    if "fid_backbone_note" in scores:
        print(f"{prog}: warning: {scores['fid_backbone_note']}", file=sys.stderr)
    if fixed_metrics is None:
        print(scores_table(scores))
    print(strict_json(scores, indent=2))
    if args.json_out:
        atomic_write_json(args.json_out, scores)
    return 0


def scores_table(scores):
    """The scalar scores as a markdown table, each beside its real floor."""
    lines = ["| metric | generated | real floor |", "|---|---:|---:|"]
    for key, value in scores.items():
        if key.endswith("_real_floor") or not isinstance(value, float) or key.startswith(("min_", "max_")):
            continue
        floor = scores.get(f"{key}_real_floor")
        lines.append(f"| {key} | {value:.4g} | {'' if floor is None else f'{floor:.4g}'} |")
    return "\n".join(lines)


def check_device_and_seed(args):
    """--device must exist on this machine and --seed (where the command has one) must fit the RNG: checked before
    any work, each failing with one line."""
    from ..engine.config import check_seed
    from ..engine.devices import resolve_device

    resolve_device(args.device)
    if getattr(args, "seed", None) is not None:
        check_seed(args.seed)


def check_output_file(option, path, reads=()):
    """An output file's folder must exist and be writable, its name must fit the file system, the path must not be
    a folder, and it must not be a file the command reads (``reads``: (option, path) pairs, a path None where not
    given), which writing it would destroy: checked before work."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file name")
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ValueError(f"{option} {path}: the folder {folder} {what}")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{option} {path}: the folder {folder} is not writable")
    if len(os.fsencode(path.name)) > os.pathconf(folder, "PC_NAME_MAX"):
        raise ValueError(f"{option} {path}: the file name is longer than the file system allows")
    for input_option, input_path in reads:
        if input_path is not None and same_file(path, input_path):
            raise ValueError(f"{option} {path} is the file {input_option} reads; writing it would destroy the "
                             "input: give another name")


def same_file(a, b):
    """Whether paths ``a`` and ``b`` name one file: the same resolved path, or one file under two names (a hard
    link, as checkpoint.pt is to the newest numbered checkpoint)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    return a.exists() and b.exists() and os.path.samefile(a, b)


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
    check_device_and_seed(args)
    check_output_file("--out", args.out, reads=[("--ckpt", args.ckpt)])
    from ..engine.sampling import latent_walk

    path = latent_walk(args.ckpt, args.out, args.rows, args.per_row, not args.no_ema, args.seed, args.device)
    return wrote(path)


def augment_command(argv):
    parser = _checkpoint_parser("ganforge augment", "Write generated images (and labels, for a conditional "
                                                     "model) to an .npz, as extra training data.")
    parser.add_argument("--out", default="synthetic.npz", help=".npz to write (keys images, labels)")
    parser.add_argument("--count", type=int, default=1000, help="images to generate")
    parser.add_argument("--label", type=int, default=None, help="only this class (default: classes in turn)")
    _add_attribute_settings(parser, "generate with")
    args = parser.parse_args(argv)
    check_device_and_seed(args)
    check_output_file("--out", args.out, reads=[("--ckpt", args.ckpt)])
    from ..engine.sampling import export_samples, parse_attribute_settings

    settings = parse_attribute_settings(args.set)
    path, arrays = export_samples(args.ckpt, args.out, args.count, args.label, not args.no_ema, args.seed,
                                  args.device, settings)
    return wrote(path, f": images {arrays['images'].shape}"
                 + "".join(f", {key} {arrays[key].shape}" for key in ("labels", "attributes") if key in arrays))


def _add_attribute_settings(parser, verb):
    parser.add_argument("--set", action="append", metavar="NAME=VALUE",
                        help=f"for a model trained with --condition-on: {verb} this attribute set (1 on, -1 off; "
                             "repeat for more); the others are drawn from the attribute vectors it trained on")


def _csv(kind):
    """An argparse type for comma-separated values: "10,50,200" -> (10, 50, 200)."""
    def parse(text):
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}")
    return parse


def train_encoder_command(argv):
    parser = _checkpoint_parser("ganforge train-encoder", "Train an encoder (image -> latent code) for a conditional "
                                                           "checkpoint's generator; saved beside it as encoder.pt.")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--feature-weight", type=float, default=0.1,
                        help="weight of the classifier-feature distance beside the pixel MSE")
    parser.add_argument("--real-weight", type=float, default=1.0,
                        help="weight of reconstructing real training images (0: G's own samples only)")
    parser.add_argument("--out", help="where to write the encoder (default: encoder.pt beside --ckpt)")
    parser.add_argument("--kernels", default="auto", help="fused ops: auto, triton, ref")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.batch_size < 1:
        raise ValueError(f"--iterations and --batch-size must be >= 1, got {args.iterations}, {args.batch_size}")
    if not 0 < args.lr < float("inf"):
        raise ValueError(f"--lr must be a finite number > 0, got {args.lr}")
    for option, weight in (("--feature-weight", args.feature_weight), ("--real-weight", args.real_weight)):
        if not 0 <= weight < float("inf"):
            raise ValueError(f"{option} must be a finite weight >= 0, got {weight}")
    check_device_and_seed(args)
    if args.out:
        check_output_file("--out", args.out, reads=[("--ckpt", args.ckpt)])
    from ..engine.apps.editing.encoder import train_encoder

    _, path, info = train_encoder(args.ckpt, args.iterations, args.batch_size, args.lr, args.feature_weight,
                                  args.real_weight, not args.no_ema, args.seed, args.device, args.kernels,
                                  args.out, not args.no_progress)
    return wrote(path, f" (final latent MSE on generated images {info['final_latent_mse']:.4f})")


def _add_image_inputs(parser, verb, count_verb):
    """The images a command reads: --input, or the first --count of a --split of the model's dataset."""
    parser.add_argument("--input", help="an image file, image folder or .npy/.npz (default: the model's "
                                        "dataset, --split)")
    parser.add_argument("--label", type=int, help="the class of the --input images (digits: read by the classifier)")
    parser.add_argument("--split", default="test", help=f"split of the model's dataset to {verb} (default test)")
    parser.add_argument("--count", type=int, default=500, help=f"images to {count_verb}")


def edit_command(argv):
    parser = _checkpoint_parser("ganforge edit", "Encode real images into a conditional generator, edit their class "
                                                  "and attributes, decode; write edit_grid.png and edit.json.")
    parser.add_argument("--out", default="runs/edit", help="folder for edit_grid.png and edit.json")
    _add_image_inputs(parser, "edit", "encode and measure")
    parser.add_argument("--encoder", default="auto",
                        help="encoder file (default: a VAE-GAN's own encoder; for another model encoder.pt beside "
                             "--ckpt when it exists)")
    parser.add_argument("--no-encoder", action="store_true", help="encode by optimisation alone")
    parser.add_argument("--steps", type=int, default=10,
                        help="per-image optimisation steps after the encoder (more: closer reconstructions, "
                             "less faithful class edits; see edit.json)")
    parser.add_argument("--strengths", type=_csv(float), default=(-3.0, -1.5, 0.0, 1.5, 3.0),
                        help="steps along each attribute direction, in latent standard deviations")
    parser.add_argument("--rows", type=int, default=8, help="images shown in the grid")
    parser.add_argument("--kernels", default="auto", help="fused ops: auto, triton, ref")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--set", action="append", metavar="NAME=VALUE",
                        help="a model trained with --condition-on: decode each face with this attribute set (1 on, "
                             "-1 off; repeat for more) as one edit; without --set each attribute is flipped in turn")
    args = parser.parse_args(argv)
    check_device_and_seed(args)
    from ..engine.apps.editing.edit import run_edit
    from ..engine.sampling import parse_attribute_settings

    settings = parse_attribute_settings(args.set)
    report = run_edit(args.ckpt, args.out, args.input, args.label, args.split, args.count,
                      None if args.no_encoder else args.encoder, args.steps, args.strengths, args.rows,
                      not args.no_ema, args.seed, args.device, args.kernels, not args.no_progress, settings)
    shown = {k: report[k] for k in ("reconstruction", "class_edit", "targets", "edits") if k in report}
    print(json.dumps(shown, indent=2))
    print(f"outputs in {args.out}")
    return 0


def encode_command(argv):
    parser = _checkpoint_parser("ganforge encode", "Encode images with a VAE-GAN's encoder (one forward pass): the "
                                                    "codes, their log-variances and classes into an .npz that "
                                                    "ganforge decode reads.")
    parser.add_argument("--out", default="codes.npz", help=".npz to write (keys z, log_var, labels)")
    _add_image_inputs(parser, "encode", "encode")
    parser.add_argument("--kernels", default="auto", help="fused ops: auto, triton, ref")
    args = parser.parse_args(argv)
    check_device_and_seed(args)
    check_output_file("--out", args.out, reads=[("--ckpt", args.ckpt), ("--input", args.input)])
    from ..engine.apps.editing.codes import run_encode

    path, info = run_encode(args.ckpt, args.out, args.input, args.label, args.split, args.count, not args.no_ema,
                            args.device, args.kernels)
    return wrote(path, f": {info['count']} codes of {info['source']} (decoded back: pixel MSE "
                       f"{info['reconstruction_pixel_mse']:.4f})")


def decode_command(argv):
    parser = _checkpoint_parser("ganforge decode", "Decode latent codes (an .npz with z, and labels for a "
                                                    "conditional model, as ganforge encode writes) into images.")
    parser.add_argument("--codes", required=True, help=".npz of codes")
    parser.add_argument("--out", default="decoded.png", help="a PNG grid, or an .npz of images and labels")
    parser.add_argument("--kernels", default="auto", help="fused ops: auto, triton, ref")
    args = parser.parse_args(argv)
    check_device_and_seed(args)
    check_output_file("--out", args.out, reads=[("--ckpt", args.ckpt), ("--codes", args.codes)])
    from ..engine.apps.editing.codes import run_decode

    path, images = run_decode(args.ckpt, args.codes, args.out, not args.no_ema, args.device, args.kernels)
    return wrote(path, f": {len(images)} images")


def augment_study_command(argv):
    from ..engine.apps.augment_study import VARIANTS, StudyConfig

    d = StudyConfig()
    parser = argparse.ArgumentParser(prog="ganforge augment-study",
                                     description="Does a k-shot set plus a conditional GAN's samples train a better "
                                                 "classifier? Writes study.json and study.png.")
    parser.add_argument("--dataset", default=d.dataset, help=FIELDS["dataset"].metadata["help"])
    parser.add_argument("--data-path", help=FIELDS["data_path"].metadata["help"])
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--channels", type=int)
    parser.add_argument("--shots", type=_csv(int), default=d.shots, help="real images per class, e.g. 10,50,200")
    parser.add_argument("--seeds", type=_csv(int), default=d.seeds, help="e.g. 0,1,2")
    parser.add_argument("--variants", type=_csv(str), default=d.variants, help=",".join(VARIANTS))
    parser.add_argument("--classifier-steps", type=int, default=d.classifier_steps)
    parser.add_argument("--gan-model", default=d.gan_model, help="mlp or dcgan")
    parser.add_argument("--gan-width", type=int, default=d.gan_width)
    parser.add_argument("--gan-iterations", type=int, default=d.gan_iterations)
    parser.add_argument("--gan-penalty", default=d.gan_penalty, help=FIELDS["penalty"].metadata["help"])
    parser.add_argument("--gan-penalty-weight", type=float, default=d.gan_penalty_weight)
    parser.add_argument("--gan-penalty-every", type=int, default=d.gan_penalty_every)
    parser.add_argument("--gan-samples-per-class", type=int, default=d.gan_samples_per_class)
    parser.add_argument("--gan-fraction", type=float, default=d.gan_fraction,
                        help="share of every classifier batch drawn from the GAN's samples")
    parser.add_argument("--filter-confidence", type=float, default=d.filter_confidence)
    parser.add_argument("--test-limit", type=int, help="score on the first N held-out images only")
    parser.add_argument("--out", default=d.out)
    parser.add_argument("--device", default=d.device)
    parser.add_argument("--kernels", default=d.kernels, help="fused ops: auto, triton, ref")
    parser.add_argument("--quick", action="store_true",
                        help="a seconds-long smoke run: k=2, one seed, few steps (for tests, not for results)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = StudyConfig(**{k: v for k, v in vars(args).items() if k not in ("quick", "no_progress")},
                      progress=not args.no_progress)
    if args.quick:
        cfg.shots, cfg.seeds, cfg.classifier_steps, cfg.gan_iterations = (2,), (0,), 20, 20
        cfg.gan_samples_per_class, cfg.test_limit, cfg.gan_model = 20, cfg.test_limit or 200, "mlp"
    from ..engine.apps.augment_study import run_study

    report = run_study(cfg)
    for k, entry in report["summary"].items():
        means = ", ".join(f"{v} {s['mean']:.3f}" for v, s in entry["variants"].items())
        print(f"k={k}: {means}")
    print(f"outputs in {cfg.out}")
    return 0
