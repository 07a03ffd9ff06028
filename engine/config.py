"""Training configuration: one dataclass, validated once, serialised into logs, checkpoints and summaries.

Each field is declared once, with `setting(...)`: its type (the annotation), default, help, group and resume class.
The command line (`ganforge train`), docs/flags.md and the checkpoint's resume comparison all read that metadata.

A field whose default depends on the model is None in the signature, meaning "take the preset": constructing a
TrainConfig fills it from PRESETS through resolve_settings, so no TrainConfig holds None for such a field and
config.json records what was trained. The fields whose None is a real value say so in their help ("not set").

A run writes its configuration to config.json; `ganforge train --config FILE` reads such a file (or a hand-written
TOML/JSON one) back, so a run can be repeated exactly.
"""
import json
import reprlib
import sys
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

LOSSES = ("ns", "minimax", "wgan", "hinge", "rpgan", "lsgan")
PENALTIES = ("none", "wgan-gp", "r1", "r2", "r1+r2")
OPTIMIZERS = ("adam", "rmsprop")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SWITCHES = ("auto", "on", "off")
KERNELS = ("auto", "triton", "ref")
VAE_BACKBONES = ("mlp", "dcgan")
FID_BACKBONES = ("mnist", "inception")
# Upper bounds on the model's sizes, far above any model here (z 100, width 64; StyleGAN's z is 512), so that a typo
# such as --z-dim 100000000 fails at once with a line instead of asking the allocator for tens of GiB.
MAX_Z_DIM = 4096
MAX_WIDTH = 1024
# A seed seeds torch's generators, which take a 64-bit integer: 0 <= seed < 2**63.
SEED_LIMIT = 2**63
# Penalties on D's input gradient at real samples, and at generated ones.
PENALIZES_REAL = ("r1", "r1+r2")
PENALIZES_FAKE = ("r2", "r1+r2")
PENALTY_GRADS = ("auto", "explicit", "autograd")  # how a penalty gets its input gradient (engine.losses)
ON_NAN = ("stop", "rollback")
# What the final evaluation (and `ganforge score`) can compute; engine.metrics.scores says what each is.
METRICS = ("fid", "kid", "is", "pr", "dc", "mifid", "intra-fid")

# The groups of `ganforge train --help` and docs/flags.md, in order, and what each holds.
GROUPS = {"data": "what to train on", "model": "what to train", "objective": "losses and regularisers",
          "optimisation": "optimizer, batch, length and EMA", "runtime": "device, speed paths and failures",
          "output": "the run folder, its logs and checkpoints, and the evaluation"}
# What a resumed run does with a field (engine.checkpoint): architecture fields must match the checkpoint's;
# tunable ones may change and are applied and reported; ignored ones are not compared.
RESUME_CLASSES = ("architecture", "tunable", "ignored")

# -- Presets: the settings a run leaves out, per model ------------------------------------------------------------
# Each penalty's weight and lazy interval in D steps: WGAN-GP's lambda 10 on every D step; R1 with gamma 1 on every
# 4th D step (lazy, StyleGAN2), which bench/results/2026-11-29_recipe-search-cpu/ found best on MNIST-5k; R2 (on
# fakes) and R1 + R2 with gamma 1 on every D step, as R3GAN applies them (its author warns that lazy intervals void
# the convergence argument). A preset may change a weight (the MLP's R1 gamma).
PENALTY_WEIGHTS = {"none": 0.0, "wgan-gp": 10.0, "r1": 1.0, "r2": 1.0, "r1+r2": 1.0}
PENALTY_INTERVALS = {"none": 1, "wgan-gp": 1, "r1": 4, "r2": 1, "r1+r2": 1}
# The MLP's preset is the speedrun recipe (bench/results/2026-12-02_speedrun-search-cpu/ and
# 2026-12-03_speedrun-search-cpu/): width 32 (hidden layers 64, 128, 256; 64 is the textbook's 128, 256, 512),
# batch 512 with Adam at 1.6e-3 (bf16 on AMX pays off from batch 256 up) and betas (0, 0.99) (no momentum: 3x lower FID at one minute than (0.5, 0.999)), an EMA of
# G with a ramp-up, 6,000 iterations (with these betas the FID curve is flat from 5,000 on:
# bench/results/2026-12-03_default-train-cpu/), and R1 gamma 10, which the second speedrun search
# (bench/results/2026-12-03_speedrun-search-cpu/) found better than 1 and 3 with these betas over three seeds:
# lower FID at one minute, less salt noise.
MLP_PRESET = {"width": 32, "batch_size": 512, "lr_g": 1.6e-3, "lr_d": 1.6e-3, "beta1": 0.0, "beta2": 0.99,
              "ema": 0.9995, "ema_rampup": 0.15, "iterations": 6000,
              "penalty_weight": {**PENALTY_WEIGHTS, "r1": 10.0}, "penalty_every": PENALTY_INTERVALS,
              "vae_layer": None, "vae_gamma": None}  # not a VAE-GAN: no reconstruction term
# DCGAN keeps the classic settings: base width 64, batch 64, Adam 2e-4 with betas (0.5, 0.999), no EMA.
DCGAN_PRESET = {"width": 64, "batch_size": 64, "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999,
                "ema": 0.0, "ema_rampup": 0.0, "iterations": 12000,
                "penalty_weight": PENALTY_WEIGHTS, "penalty_every": PENALTY_INTERVALS,
                "vae_layer": None, "vae_gamma": None}
# A VAE-GAN takes its backbone's preset, with its reconstruction settings: D's feature layer (1-based) where an
# image and its reconstruction are compared, and gamma, the weight of that comparison beside the GAN loss in the
# decoder's loss. The MLP's were searched (bench/results/2026-12-02_vaegan-settings-cpu/: layer 2 of 3, gamma 0.01
# gave the best FID at nearly the best reconstructions), with Adam betas (0.5, 0.999), R1 gamma 1 and 8,000
# iterations, which it keeps; DCGAN's were not: its last feature layer, and the MLP's gamma scaled by the feature
# counts (128 there, 128 x 7 x 7 at DCGAN-28's layer 2), the same weight per feature.
PRESETS = {
    "mlp": MLP_PRESET,
    "dcgan": DCGAN_PRESET,
    "vaegan/mlp": {**MLP_PRESET, "beta1": 0.5, "beta2": 0.999, "iterations": 8000, "penalty_weight": PENALTY_WEIGHTS,
                   "vae_layer": 2, "vae_gamma": 0.01},
    "vaegan/dcgan": {**DCGAN_PRESET, "vae_layer": 2, "vae_gamma": 2e-4},
}
PRESET_FIELDS = tuple(MLP_PRESET)
PER_PENALTY = ("penalty_weight", "penalty_every")  # preset values given per penalty: {penalty: value}
# --fid-every for a run whose images are scored at the end: its FID curve and seconds to each FID milestone land
# in summary.json (at most --fid-budget of the training time). A run not scored has no curve either.
FID_EVERY_SCORED = 250
# The fields resolve_settings fills: no TrainConfig holds None for one, unless its preset does ("does not apply").
RESOLVED_FIELDS = PRESET_FIELDS + ("fid_every",)


def preset_name(model, vae_backbone):
    """The key of PRESETS a model trains with: the model, or a VAE-GAN on its backbone ("vaegan/mlp")."""
    return f"vaegan/{vae_backbone}" if model == "vaegan" else model


def resolve_settings(settings):
    """Every TrainConfig field's value: ``settings`` ({field: value}), the fields left out at their defaults, and
    each field of RESOLVED_FIELDS left out or None filled in: from the model's preset (a penalty's weight and
    interval from the preset's entry for that penalty), an EMA turned off (--ema 0) with no ramp-up, and
    --fid-every FID_EVERY_SCORED for a run that is scored (image data, --fid-samples > 0), else 0. An unknown model
    or penalty is left for validate to name."""
    from .data import MIXTURES

    resolved = {**{name: f.default for name, f in FIELDS.items()}, **settings}
    preset = PRESETS.get(preset_name(resolved["model"], resolved["vae_backbone"]), {})
    for name, value in preset.items():
        if resolved[name] is None:
            resolved[name] = value.get(resolved["penalty"]) if name in PER_PENALTY else value
    if settings.get("ema_rampup") is None and resolved["ema"] == 0:
        resolved["ema_rampup"] = 0.0
    if resolved["fid_every"] is None:
        scored = resolved["fid_samples"] > 0 and resolved["dataset"] not in MIXTURES
        resolved["fid_every"] = FID_EVERY_SCORED if scored else 0
    return resolved


def default_text(name):
    """Field ``name``'s default as the help and docs/flags.md show it: per model (from PRESETS) where it depends on
    the model, per penalty for a penalty's weight and interval, "not set" for a None that is a real value."""
    if name in PER_PENALTY:
        texts = {penalty: _per_model({label: preset[name][penalty] for label, preset in PRESETS.items()})
                 for penalty in PENALTIES if penalty != "none"}
        return "; ".join(f"{penalty}{':' if ',' in text else ''} {text}" for penalty, text in texts.items())
    if name in PRESET_FIELDS:
        text = _per_model({label: preset[name] for label, preset in PRESETS.items()})
        return text + ("; 0 when --ema is 0" if name == "ema_rampup" else "")
    if name == "fid_every":
        return f"{FID_EVERY_SCORED} when the run is scored (image data and --fid-samples > 0), else 0"
    default = FIELDS[name].default
    if isinstance(default, bool):
        return "on" if default else "off"
    if default is None:
        return "not set"
    if isinstance(default, float):
        return f"{default:g}"
    return '""' if default == "" else str(default)


def _per_model(values):
    """{preset: value} as text: the value when all presets share it, else "mlp 32, dcgan 64, ..." (a preset whose
    value is None, where the field does not apply, left out); numbers as %g."""
    shown = {label: f"{value:g}" for label, value in values.items() if value is not None}
    if len(set(shown.values())) == 1 and len(shown) == len(values):
        return next(iter(shown.values()))
    return ", ".join(f"{label} {value}" for label, value in shown.items())


def setting(default, *, help, group, resume, choices=None, aliases=()):
    """A TrainConfig field with what the command line, docs/flags.md and a resumed run need to know of it.

    default: None on a field of RESOLVED_FIELDS means "take the preset"; on another field it is a real value,
        which its help describes ("not set: ..."). The field's type is its annotation.
    group: a key of GROUPS; resume: one of RESUME_CLASSES; choices: the values validate allows;
    aliases: older names the flag (--NAME) and a --config file still accept.
    """
    if group not in GROUPS or resume not in RESUME_CLASSES:
        raise ValueError(f"setting: group must be one of {tuple(GROUPS)} and resume one of {RESUME_CLASSES}")
    return field(default=default, metadata={"help": help, "group": group, "resume": resume, "choices": choices,
                                            "aliases": aliases})


def parse_metrics(text, conditional=False):
    """"fid,kid,..." (or "all": every metric that applies) -> a tuple in METRICS order; an unknown name, or
    intra-fid for a model without classes, raises ValueError."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if names == ["all"]:
        return tuple(m for m in METRICS if conditional or m != "intra-fid")
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise ValueError(f"--metrics: unknown metric(s) {', '.join(unknown) or '(none given)'}; choose from "
                         f"{', '.join(METRICS)} or 'all'")
    if "intra-fid" in names and not conditional:
        raise ValueError("--metrics intra-fid scores each class apart: it needs a conditional model (--conditional)")
    return tuple(m for m in METRICS if m in names)


def check_seed(seed, option="--seed"):
    """Raise ValueError unless ``seed`` is an integer the random generators take (0 <= seed < SEED_LIMIT)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{option} must be an integer in [0, 2**63), got {seed!r}")
    return seed


def flag(name):
    """The command-line flag of field ``name``: --lr-g for lr_g."""
    return "--" + name.replace("_", "-")


@dataclass
class TrainConfig:
    # -- data
    dataset: str = setting("mnist5k", group="data", resume="architecture",
                           help="mnist5k (5,000 digits embedded in the package), ring8 and grid25 (2-D mixtures of "
                                "Gaussians), or files: mnist-idx, cifar10, celeba, folder, npy")
    data_path: str | None = setting(None, group="data", resume="ignored",
                                    help="file or folder for mnist-idx, cifar10, celeba, folder and npy (not set: the "
                                         "other datasets need none)")
    image_size: int | None = setting(None, group="data", resume="architecture",
                                     help="resize images to this size, e.g. DCGAN-32/64 on 28x28 digits (not set: "
                                          "the data's own size, CelebA's 64)")
    channels: int | None = setting(None, group="data", resume="architecture",
                                   help="1 or 3: convert grey <-> colour (not set: the data's own channels)")
    stream: str = setting("auto", group="data", resume="ignored", choices=SWITCHES,
                          help="read training batches from disk while the steps run instead of holding the data in "
                               "memory: on, off, or auto (stream a uint8 .npy array larger than --data-memory)")
    data_memory: float | None = setting(None, group="data", resume="ignored",
                                        help="GiB the resident data may take before --stream auto streams it (not "
                                             "set: half the machine's available memory at run time; on CUDA also at "
                                             "most half the device's free memory)")
    data_workers: int = setting(2, group="data", resume="ignored",
                                help="worker processes reading a streamed dataset (0: the training process reads)")
    # -- model
    model: str = setting("mlp", group="model", resume="architecture",
                         help="mlp (an MLP GAN; its preset is the speedrun recipe), dcgan, or vaegan (an encoder "
                              "trained with G, Larsen et al. 2016; on --vae-backbone)")
    vae_backbone: str = setting("mlp", group="model", resume="architecture", choices=VAE_BACKBONES,
                                help="--model vaegan: the G (decoder) and D it builds on, mlp or dcgan (its encoder "
                                     "is the backbone's critic body at the same width); its preset is the backbone's")
    conditional: bool = setting(False, group="model", resume="architecture",
                                help="train a conditional GAN (class labels into G and D)")
    condition_on: str = setting("", group="model", resume="architecture",
                                help="condition G and D on binary attributes of the data, comma-separated (CelebA: "
                                     "Smiling,Male,Eyeglasses) or all; G takes the -1/1 vector, D projects it; sample "
                                     "and edit them with --set; empty: none")
    z_dim: int = setting(100, group="model", resume="architecture", help="size of G's latent code z")
    width: int | None = setting(None, group="model", resume="architecture",
                                help="DCGAN's base channel count; the MLP's hidden layers are 2w, 4w, 8w (64: the "
                                     "textbook's 128, 256, 512)")
    # -- objective
    loss: str = setting("ns", group="objective", resume="tunable", choices=LOSSES,
                        help="ns (non-saturating), minimax, wgan, hinge, rpgan (relativistic pairing, R3GAN's) or "
                             "lsgan (least squares)")
    penalty: str = setting("r1", group="objective", resume="architecture", choices=PENALTIES,
                           help="none, wgan-gp (gradient penalty on interpolates), r1 (on reals), r2 (on generated "
                                "samples) or r1+r2 (both, as R3GAN)")
    penalty_weight: float | None = setting(None, group="objective", resume="tunable",
                                           help="lambda of WGAN-GP, gamma of R1 / R2")
    penalty_every: int | None = setting(None, group="objective", resume="tunable",
                                        help="lazy regularisation: penalise every k-th D step, the weight scaled by k")
    clip: float | None = setting(None, group="objective", resume="tunable",
                                 help="WGAN weight clipping of D's parameters to [-clip, clip] (not set: none)")
    spectral_norm: bool = setting(False, group="objective", resume="architecture",
                                  help="spectrally normalise D's layers (Miyato et al. 2018): one power iteration per "
                                       "D step, its vectors in D's state and checkpoints")
    feature_matching: float = setting(0.0, group="objective", resume="tunable",
                                      help="add W * ||mean f(real) - mean f(fake)||^2 to G's loss, f = D's penultimate "
                                           "features (Salimans et al. 2016); 0 disables")
    lecam: float = setting(0.0, group="objective", resume="tunable",
                           help="add W * the LeCam regulariser (Tseng et al. 2021) to D's loss, with EMAs (decay 0.99) "
                                "of D's real and fake scores; 0 disables")
    augment: str = setting("none", group="objective", resume="tunable",
                           help="augment every image D sees: none or a comma-separated subset of "
                                "translation,cutout,color")
    augment_p: float = setting(1.0, group="objective", resume="tunable",
                               help="probability of each augmentation op per sample (the fixed strength)")
    ada_target: float = setting(0.0, group="objective", resume="tunable",
                                help="adaptive strength: keep E[sign(D(real))] at this target (e.g. 0.6); 0 keeps "
                                     "--augment-p fixed")
    vae_layer: int | None = setting(None, group="objective", resume="tunable",
                                    help="--model vaegan: D's feature layer (1-based) where an image and its "
                                         "reconstruction are compared")
    vae_gamma: float | None = setting(None, group="objective", resume="tunable",
                                      help="--model vaegan: weight of that feature reconstruction beside the GAN loss "
                                           "in the decoder's loss")
    vae_kl: float = setting(1.0, group="objective", resume="tunable",
                            help="--model vaegan: weight of the KL to the prior in the encoder's loss")
    # -- optimisation
    optimizer: str = setting("adam", group="optimisation", resume="architecture", choices=OPTIMIZERS,
                             help="adam or rmsprop")
    lr_g: float | None = setting(None, group="optimisation", resume="tunable", help="G's learning rate")
    lr_d: float | None = setting(None, group="optimisation", resume="tunable", help="D's learning rate")
    beta1: float | None = setting(None, group="optimisation", resume="tunable", help="Adam's beta1")
    beta2: float | None = setting(None, group="optimisation", resume="tunable", help="Adam's beta2")
    n_critic: int = setting(1, group="optimisation", resume="tunable", help="D steps per G step")
    batch_size: int | None = setting(None, group="optimisation", resume="tunable", help="images per iteration")
    iterations: int | None = setting(None, group="optimisation", resume="ignored", aliases=("steps",),
                                     help="training iterations, each n_critic D steps and one G step")
    ema: float | None = setting(None, group="optimisation", resume="tunable",
                                help="decay of the EMA of G's weights, which then samples; 0 disables")
    ema_rampup: float | None = setting(None, group="optimisation", resume="tunable",
                                       help="EMA ramp-up: its half-life is at most this times the images seen; 0 "
                                            "disables")
    # -- runtime
    device: str = setting("auto", group="runtime", resume="ignored",
                          help="auto (cuda when there is a GPU, else cpu) or a torch device: cpu, cuda, cuda:1")
    seed: int = setting(0, group="runtime", resume="ignored",
                        help="seed of every random stream (a resumed run continues its checkpoint's streams)")
    precision: str = setting("auto", group="runtime", resume="tunable", choices=PRECISIONS,
                             help="fp32, bf16, fp16 or auto (bf16 on CUDA and on CPUs with AMX, else fp32)")
    graphs: str = setting("auto", group="runtime", resume="tunable", choices=SWITCHES,
                          help="capture D and G steps in CUDA graphs: auto (on with CUDA), on, off")
    kernels: str = setting("auto", group="runtime", resume="tunable", choices=KERNELS,
                           help="fused ops: auto (Triton on CUDA), triton, ref (plain PyTorch reference)")
    channels_last: str = setting("auto", group="runtime", resume="ignored", choices=SWITCHES,
                                 help="channels-last memory layout for convolutional models: auto (on with CUDA), on, "
                                      "off")
    compile: bool = setting(False, group="runtime", resume="tunable",
                            help="torch.compile the D and G steps (Inductor; captured after compiling with --graphs); "
                                 "a penalty then needs the explicit input gradient (torch.compile cannot double "
                                 "backward)")
    penalty_grad: str = setting("auto", group="runtime", resume="tunable", choices=PENALTY_GRADS,
                                help="D's input gradient for the penalty: auto (explicit when the critic supports it), "
                                     "explicit (first-order ops, no double backward) or autograd (double backward)")
    sync_bn: bool = setting(False, group="runtime", resume="ignored",
                            help="under torchrun: normalise with BatchNorm statistics of the global batch (one "
                                 "all-reduce per BatchNorm layer) instead of each rank's own")
    dist_timeout: float = setting(600.0, group="runtime", resume="ignored",
                                  help="under torchrun: seconds a rank waits for the others (joining, or in a "
                                       "collective) before it stops with an error")
    on_nan: str = setting("stop", group="runtime", resume="ignored", choices=ON_NAN,
                          help="a non-finite loss or weight: stop (keep the last good checkpoint) or rollback to it "
                               "with the learning rates halved")
    max_rollbacks: int = setting(3, group="runtime", resume="ignored",
                                 help="--on-nan rollback: at most this many rollbacks before stopping")
    # -- output
    out: str = setting("runs/default", group="output", resume="ignored",
                       help="the run folder: config.json, log.jsonl, sample grids, checkpoints, summary.json")
    log_every: int = setting(100, group="output", resume="ignored", help="a log record every N iterations")
    sample_every: int = setting(1000, group="output", resume="ignored", help="a sample grid every N iterations")
    ckpt_every: int = setting(2000, group="output", resume="ignored", help="a checkpoint every N iterations")
    keep_checkpoints: int = setting(3, group="output", resume="ignored",
                                    help="keep the newest K checkpoint-NNNNNN.pt files (checkpoint.pt links the "
                                         "newest)")
    fid_samples: int = setting(2000, group="output", resume="ignored",
                               help="generated images scored at the end (0 skips the final evaluation)")
    metrics: str = setting("all", group="output", resume="ignored",
                           help=f"the final evaluation's metrics: comma-separated {','.join(METRICS)}, or all (every "
                                "one that applies; intra-fid for conditional models)")
    fid_every: int | None = setting(None, group="output", resume="ignored",
                                    help="also score FID every N iterations during training and keep the best "
                                         "checkpoint (0: off)")
    fid_every_samples: int = setting(2000, group="output", resume="ignored",
                                     help="generated images per FID during training")
    fid_budget: float = setting(0.1, group="output", resume="ignored",
                                help="FID during training skips a scoring when it has used this share of the "
                                     "training time")
    fid_backbone: str = setting("mnist", group="output", resume="ignored", choices=FID_BACKBONES,
                                help="the features FID compares: mnist (the embedded digit classifier) or inception "
                                     "(needs --inception-weights)")
    inception_weights: str | None = setting(None, group="output", resume="ignored",
                                            help="local Inception weights file for --fid-backbone inception (not "
                                                 "set: none; --fid-backbone mnist needs none)")
    progress: bool = setting(True, group="output", resume="ignored", help="show the progress bar")
    tensorboard: bool = setting(False, group="output", resume="ignored",
                                help="also write scalars, sample grids and FID to OUT/tensorboard (needs tensorboard)")

    def __post_init__(self):
        """Fill each field left as None that a preset or rule sets (resolve_settings)."""
        for name, value in resolve_settings(asdict(self)).items():
            setattr(self, name, value)

    def validate(self):
        """Raise ValueError naming the first bad field; return self for chaining. Checks only: changes nothing."""
        self._check_choices()
        self._check_data_and_model()
        self._check_objective()
        self._check_optimisation()
        self._check_output()
        if self.model == "vaegan":
            self._check_vaegan()
        return self

    def _check_choices(self):
        """Every field with a fixed set of values holds one of them, and every preset field is set."""
        from ..models import MODEL_NAMES

        from .data import DATASETS

        for f in fields(self):
            allowed = {"model": MODEL_NAMES, "dataset": DATASETS}.get(f.name, f.metadata["choices"])
            if allowed is not None and getattr(self, f.name) not in allowed:
                raise ValueError(f"{flag(f.name)} must be one of {allowed}, got {getattr(self, f.name)!r}")
        preset = PRESETS[preset_name(self.model, self.vae_backbone)]
        unset = [name for name in PRESET_FIELDS if getattr(self, name) is None and preset[name] is not None]
        if unset:  # set to None after construction
            raise ValueError(f"{', '.join(map(flag, unset))} must be set, got None")

    def _check_data_and_model(self):
        if self.data_memory is not None and not self.data_memory > 0:
            raise ValueError(f"--data-memory must be > 0 GiB, got {self.data_memory}")
        if self.data_workers < 0:
            raise ValueError(f"--data-workers must be >= 0, got {self.data_workers}")
        self._check_at_least_one("z_dim", "width")
        for name, bound in (("z_dim", MAX_Z_DIM), ("width", MAX_WIDTH)):
            if getattr(self, name) > bound:
                raise ValueError(f"{flag(name)} must be at most {bound}, got {getattr(self, name)}")
        if self.condition_on and self.conditional:
            raise ValueError("--conditional (class labels) and --condition-on (attribute vectors) are two ways of "
                             "conditioning a model: choose one")

    def _check_objective(self):
        from .augment import parse_policy

        # no penalty: its weight is unused, and PENALTY_WEIGHTS' is 0
        if not (self.penalty_weight > 0 or (self.penalty == "none" and self.penalty_weight == 0)):
            raise ValueError(f"--penalty-weight must be > 0, got {self.penalty_weight}")
        self._check_at_least_one("penalty_every")
        if self.clip is not None and self.clip <= 0:
            raise ValueError(f"--clip must be > 0, got {self.clip}")
        self._check_finite_weights("feature_matching", "lecam")
        parse_policy(self.augment)
        if not 0 <= self.augment_p <= 1:
            raise ValueError(f"--augment-p must be in [0, 1], got {self.augment_p}")
        if not 0 <= self.ada_target < 1:
            raise ValueError(f"--ada-target must be in [0, 1), got {self.ada_target}")

    def _check_optimisation(self):
        self._check_at_least_one("batch_size", "iterations", "n_critic")
        for name in ("lr_g", "lr_d"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{flag(name)} must be > 0, got {getattr(self, name)}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{flag(name)} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"--ema must be in [0, 1), got {self.ema}")
        if self.ema_rampup < 0 or (self.ema_rampup > 0 and self.ema == 0):
            raise ValueError(f"--ema-rampup must be >= 0 and needs --ema > 0, got {self.ema_rampup}")
        check_seed(self.seed)
        if self.max_rollbacks < 0:
            raise ValueError(f"--max-rollbacks must be >= 0, got {self.max_rollbacks}")
        if not self.dist_timeout > 0:
            raise ValueError(f"--dist-timeout must be > 0 seconds, got {self.dist_timeout}")

    def _check_output(self):
        self._check_at_least_one("log_every", "sample_every", "ckpt_every", "keep_checkpoints")
        if self.fid_every < 0 or self.fid_every_samples < 2 or not 0 < self.fid_budget <= 1:
            raise ValueError("--fid-every must be >= 0, --fid-every-samples >= 2 and --fid-budget in (0, 1], got "
                             f"{self.fid_every}, {self.fid_every_samples}, {self.fid_budget}")
        if self.fid_samples < 0:
            raise ValueError(f"--fid-samples must be >= 0, got {self.fid_samples}")
        parse_metrics(self.metrics, self.conditional)

    def _check_vaegan(self):
        if self.batch_size % 2:
            raise ValueError(f"--model vaegan needs an even --batch-size (half of D's fakes are reconstructions), "
                             f"got {self.batch_size}")
        if self.vae_layer < 1:
            raise ValueError(f"--vae-layer must be >= 1 (D's first feature layer is 1), got {self.vae_layer}")
        self._check_finite_weights("vae_gamma", "vae_kl")
        for name, off in (("augment", "none"), ("feature_matching", 0.0)):
            if getattr(self, name) != off:
                raise ValueError(f"{flag(name)} is not supported with --model vaegan (its reconstruction term reads "
                                 "D's features of unaugmented images); leave it out")

    def _check_at_least_one(self, *names):
        for name in names:
            if getattr(self, name) < 1:
                raise ValueError(f"{flag(name)} must be >= 1, got {getattr(self, name)}")

    def _check_finite_weights(self, *names):
        for name in names:
            value = getattr(self, name)
            if not (value >= 0 and value < float("inf")):
                raise ValueError(f"{flag(name)} must be a finite weight >= 0, got {value}")

    @property
    def architecture(self):
        """The G and D family the model builds: the model itself, or a VAE-GAN's backbone."""
        return self.vae_backbone if self.model == "vaegan" else self.model

    def penalized_d_steps(self, iteration):
        """For each of the n_critic D steps of ``iteration``: whether it adds the penalty (every
        penalty_every-th D step counted over the whole run, the lazy regularisation interval)."""
        first = iteration * self.n_critic
        return [self.penalty != "none" and d_index % self.penalty_every == 0
                for d_index in range(first, first + self.n_critic)]

    def to_dict(self):
        return asdict(self)

    def write_json(self, path):
        """The configuration as JSON (what `--config` reads back)."""
        from .io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, values, source=None):
        """A saved configuration (a checkpoint's, a run's config.json) back as a TrainConfig. A field newer than the
        saved configuration takes its default; one this version cannot fill in raises ValueError naming ``source``
        (the file, when known)."""
        lacking = saved_config_gaps(values)
        if lacking:
            raise ValueError(f"{source or 'a saved configuration'} was written by an older ganforge that this version "
                             f"cannot read: its configuration lacks {', '.join(lacking)}")
        return cls(**{name: value for name, value in values.items() if name in FIELDS})


FIELDS = {f.name: f for f in fields(TrainConfig)}


def fields_with_resume_class(resume):
    """The names of the fields of one resume class (RESUME_CLASSES), in declaration order."""
    return tuple(name for name, f in FIELDS.items() if f.metadata["resume"] == resume)


def saved_config_gaps(values):
    """The preset fields a saved configuration lacks where its model has a preset value (written before the field
    existed: what it trained with is unknown here), and an R1 gamma saved as None for a model whose preset gamma is
    not PENALTY_WEIGHTS' (written when None meant PENALTY_WEIGHTS')."""
    preset = PRESETS.get(preset_name(values.get("model", FIELDS["model"].default),
                                     values.get("vae_backbone", FIELDS["vae_backbone"].default)), {})
    gaps = [name for name, value in preset.items() if value is not None and name not in values]
    penalty = values.get("penalty", FIELDS["penalty"].default)
    weights = preset.get("penalty_weight", PENALTY_WEIGHTS)
    if "penalty_weight" in values and values["penalty_weight"] is None and \
            weights.get(penalty) != PENALTY_WEIGHTS.get(penalty):
        gaps.append(f"penalty_weight (null: the {penalty} weight of an older default)")
    return gaps


def field_type(name):
    """The Python type of TrainConfig field ``name`` (the flag's `type=`; what a config file must hold): its
    annotation, without the None of an optional field."""
    annotation = FIELDS[name].type
    kinds = [kind for kind in typing.get_args(annotation) if kind is not type(None)]
    return kinds[0] if kinds else annotation


def load_config_file(path):
    """Read a TOML or JSON file of TrainConfig fields into a dict; unknown keys or wrong types raise ValueError.

    Keys may use dashes or underscores (``lr-g`` or ``lr_g``) and a field's older names (``steps``: ``iterations``).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config: {path} does not exist or is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"--config: {path} is not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}); "
                         "expected a TOML (.toml) or JSON file") from None
    try:
        if path.suffix.lower() == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:
                import tomli as tomllib
            raw = tomllib.loads(text)
        else:
            raw = json.loads(text)
    except ValueError as exc:  # json.JSONDecodeError and tomllib.TOMLDecodeError are ValueErrors
        raise ValueError(f"--config: cannot parse {path} ({exc}); expected a TOML (.toml) or JSON file") from None
    except RecursionError:  # both parsers recurse once per level of nested arrays or tables
        raise ValueError(f"--config: {path} nests arrays or tables too deeply to read; expected a table of "
                         "settings, each a number, text or switch") from None
    if not isinstance(raw, dict):
        raise ValueError(f"--config: {path} must hold a table of settings, got {type(raw).__name__}")
    values = {key.replace("-", "_"): value for key, value in raw.items()}
    for name, f in FIELDS.items():
        for alias in f.metadata["aliases"]:
            if alias in values and name not in values:
                values[name] = values.pop(alias)
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"--config: {path} has unknown settings {', '.join(unknown)}")
    for name, value in values.items():
        kind = field_type(name)
        ok = value is None or isinstance(value, kind) or (kind is float and isinstance(value, int))
        if not ok or (kind is not bool and isinstance(value, bool)):
            raise ValueError(f"--config: {path}: {name} must be {kind.__name__}, got {reprlib.repr(value)}")
        if kind is float and value is not None:
            values[name] = float(value)
    return values
