"""Training configuration: one dataclass, validated once, serialised into logs, checkpoints and summaries.

A run writes its resolved configuration to config.json; `ganforge train --config FILE` reads such a file (or a
hand-written TOML/JSON one) back, so a run can be repeated exactly.
"""
import json
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

LOSSES = ("ns", "minimax", "wgan", "hinge", "rpgan", "lsgan")
PENALTIES = ("none", "wgan-gp", "r1", "r2", "r1+r2")
OPTIMIZERS = ("adam", "rmsprop")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SWITCHES = ("auto", "on", "off")
# (weight, interval) of each penalty when not given: WGAN-GP's lambda 10 on every D step; R1 with gamma 1 on every
# 4th D step (lazy, StyleGAN2), which bench/results/recipe-search-cpu-2026-11-29.json found best on MNIST-5k; R2
# (on fakes) and R1 + R2 with gamma 1 on every D step, as R3GAN applies them (its author warns that lazy
# intervals void the convergence argument).
PENALTY_DEFAULTS = {"none": (0.0, 1), "wgan-gp": (10.0, 1), "r1": (1.0, 4), "r2": (1.0, 1), "r1+r2": (1.0, 1)}
# Penalties on D's input gradient at real samples, and at generated ones.
PENALIZES_REAL = ("r1", "r1+r2")
PENALIZES_FAKE = ("r2", "r1+r2")
PENALTY_GRADS = ("auto", "explicit", "autograd")  # how a penalty gets its input gradient (engine.losses)
ON_NAN = ("stop", "rollback")
# The settings a run leaves out, per model. The MLP's are the speedrun recipe (bench/results/
# speedrun-search-cpu-2026-12-02/ and -12-03/): width 32 (hidden layers 64, 128, 256; 64 is the textbook's 128,
# 256, 512), batch 512 with Adam at 1.6e-3 (bf16 on AMX pays off from batch 256 up) and betas (0, 0.99) (no
# momentum: 3x lower FID at one minute than (0.5, 0.999)), an EMA of G with a ramp-up, 6,000 iterations (with
# these betas the FID curve is flat from 5,000 on: bench/results/default-train-cpu-2026-12-03/). DCGAN keeps the
# classic settings: base width 64, batch 64, Adam 2e-4 with betas (0.5, 0.999), no EMA.
MODEL_DEFAULTS = {
    "mlp": {"width": 32, "batch_size": 512, "lr_g": 1.6e-3, "lr_d": 1.6e-3, "beta1": 0.0, "beta2": 0.99,
            "ema": 0.9995, "ema_rampup": 0.15, "iterations": 6000},
    "dcgan": {"width": 64, "batch_size": 64, "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999, "ema": 0.0,
              "ema_rampup": 0.0, "iterations": 12000},
}
# R1's gamma when --penalty-weight is left out, for the models where it is not PENALTY_DEFAULTS': the speedrun
# search (bench/results/speedrun-search-cpu-2026-12-03/) found gamma 10 better than 1 and 3 with the MLP's betas
# (0, 0.99) over three seeds: lower FID at one minute, less salt noise.
R1_GAMMA_DEFAULTS = {"mlp": 10.0}
# A VAE-GAN's reconstruction settings when not given, per backbone: D's feature layer (1-based) where an image and
# its reconstruction are compared, and gamma, the weight of that comparison beside the GAN loss in the decoder's
# loss. The MLP's were searched (bench/results/vaegan-settings-cpu-2026-12-02/: layer 2 of 3, gamma 0.01 gave the
# best FID at nearly the best reconstructions); DCGAN's were not: its last feature layer, and the MLP's gamma
# scaled by the feature counts (128 there, 128 x 7 x 7 at DCGAN-28's layer 2), the same weight per feature.
# Its Adam betas are those its settings were searched with, (0.5, 0.999), on both backbones, and so are the MLP
# backbone's 8,000 iterations.
VAE_DEFAULTS = {"mlp": {"vae_layer": 2, "vae_gamma": 0.01, "beta1": 0.5, "beta2": 0.999, "iterations": 8000},
                "dcgan": {"vae_layer": 2, "vae_gamma": 2e-4, "beta1": 0.5, "beta2": 0.999}}
# --fid-every when not given, for a run whose images are scored at the end: its FID curve and seconds to each FID
# milestone land in summary.json (at most --fid-budget of the training time).
FID_EVERY_DEFAULT = 250
# Every model had width 64 before the width could be left to the model: what a saved config without the field had.
LEGACY_WIDTH = 64
# What the final evaluation (and `ganforge score`) can compute; engine.metrics.scores says what each is.
METRICS = ("fid", "kid", "is", "pr", "dc", "mifid", "intra-fid")


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


@dataclass
class TrainConfig:
    # what to train
    model: str = "mlp"                 # models.MODEL_NAMES
    dataset: str = "mnist5k"           # engine.data.DATASETS
    data_path: str | None = None
    image_size: int | None = None      # resize images (DCGAN-32/64 on 28x28 digits)
    channels: int | None = None        # 1 or 3: convert grey <-> colour
    stream: str = "auto"               # read batches from disk while training: on | off | auto (when data exceed
    #                                    --data-memory; .npy uint8 arrays)
    data_memory: float | None = None   # GiB resident data may take (None: half the host's available memory; on
    #                                    CUDA also at most half the device's free memory)
    data_workers: int = 2              # processes reading a streamed dataset
    conditional: bool = False
    condition_on: str = ""             # comma-separated attributes (CelebA's Smiling,Male,...) or "all": G and D
    #                                    take the attribute vector (models.conditioning); "" for none
    z_dim: int = 100
    width: int | None = None           # DCGAN base channels; MLP hidden 2w, 4w, 8w (None here: MODEL_DEFAULTS)
    vae_backbone: str = "mlp"          # --model vaegan: the G (decoder) and D it builds on, mlp or dcgan
    # objective
    loss: str = "ns"                   # non-saturating, minimax, wasserstein critic, hinge, rpgan, lsgan
    penalty: str = "r1"                # none, wgan-gp, r1 (reals), r2 (fakes), r1+r2
    penalty_weight: float | None = None  # lambda of WGAN-GP, gamma of R1; None: PENALTY_DEFAULTS
    penalty_every: int | None = None     # lazy regularisation: penalise every k-th D step, weight scaled by k
    penalty_grad: str = "auto"         # D's input gradient: explicit (first-order) | autograd (double backward)
    clip: float | None = None          # WGAN weight clipping of D's parameters
    spectral_norm: bool = False        # D's layers spectrally normalised (one power iteration per D step)
    feature_matching: float = 0.0      # > 0: G's loss adds this times ||E f(x) - E f(G(z))||^2, f = D's features
    lecam: float = 0.0                 # > 0: D's loss adds this times the LeCam regulariser
    vae_layer: int | None = None       # --model vaegan: D's feature layer comparing reconstructions (VAE_DEFAULTS)
    vae_gamma: float | None = None     # --model vaegan: weight of that reconstruction term in the decoder's loss
    vae_kl: float = 1.0                # --model vaegan: weight of the KL term in the encoder's loss
    # optimisation
    optimizer: str = "adam"
    lr_g: float | None = None          # None (as every field below left as None): its model's MODEL_DEFAULTS
    lr_d: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    n_critic: int = 1                  # D steps per G step
    ema: float | None = None           # decay of the EMA of G's weights; 0 turns it off
    ema_rampup: float | None = None    # > 0: the EMA's half-life is at most this times the images seen so far
    augment: str = "none"              # differentiable augmentation of D's inputs: subset of translation,cutout,color
    augment_p: float = 1.0             # probability of each op per sample (fixed strength)
    ada_target: float = 0.0            # > 0: adapt p to keep E[sign(D(real))] at this target (ADA); 0: fixed p
    batch_size: int | None = None
    iterations: int | None = None      # training iterations: n_critic D steps + one G step each
    # execution
    device: str = "auto"
    seed: int = 0
    precision: str = "auto"            # auto: bf16 on CUDA and on CPUs with AMX, else fp32
    graphs: str = "auto"               # CUDA-graph capture of whole steps; auto: on with CUDA
    kernels: str = "auto"              # auto | triton | ref
    channels_last: str = "auto"
    compile: bool = False              # torch.compile the D and G step functions (before any graph capture)
    sync_bn: bool = False              # under torchrun: BatchNorm statistics of the global batch, not each rank's
    dist_timeout: float = 600.0        # under torchrun: seconds a rank waits for the others before failing
    # outputs
    out: str = "runs/default"
    log_every: int = 100
    sample_every: int = 1000
    ckpt_every: int = 2000
    keep_checkpoints: int = 3          # checkpoint-NNNNNN.pt files kept (checkpoint.pt is the newest)
    on_nan: str = "stop"               # a non-finite loss or weight: stop, or rollback to the last checkpoint
    max_rollbacks: int = 3             # --on-nan rollback: at most this many, each halving the learning rates
    fid_samples: int = 2000            # generated images scored at the end; 0 skips FID
    metrics: str = "all"               # the final evaluation: comma-separated METRICS, or all that apply
    fid_every: int | None = None       # > 0: also score FID every N iterations during training (0: off);
    #                                    None: FID_EVERY_DEFAULT when the run is scored (image data, --fid-samples > 0)
    fid_every_samples: int = 2000      # generated images per on-the-fly FID (as many as the final one's)
    fid_budget: float = 0.1            # on-the-fly FID may take at most this share of the training time
    fid_backbone: str = "mnist"        # mnist (embedded classifier) | inception (needs --inception-weights)
    inception_weights: str | None = None
    progress: bool = True
    tensorboard: bool = False          # also write scalars, sample grids and FID to <out>/tensorboard

    def validate(self):
        """Raise ValueError naming the first bad field; return self for chaining."""
        from ..models import MODEL_NAMES

        from .data import DATASETS

        def choice(name, allowed):
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name.replace('_', '-')} must be one of {allowed}, got {getattr(self, name)!r}")

        choice("model", MODEL_NAMES)
        choice("vae_backbone", ("mlp", "dcgan"))
        self.resolve_defaults()
        choice("dataset", DATASETS)
        choice("loss", LOSSES)
        choice("penalty", PENALTIES)
        choice("penalty_grad", PENALTY_GRADS)
        choice("optimizer", OPTIMIZERS)
        choice("precision", PRECISIONS)
        choice("graphs", SWITCHES)
        choice("channels_last", SWITCHES)
        choice("kernels", ("auto", "triton", "ref"))
        choice("fid_backbone", ("mnist", "inception"))
        choice("on_nan", ON_NAN)
        choice("stream", SWITCHES)
        if self.data_memory is not None and not self.data_memory > 0:
            raise ValueError(f"--data-memory must be > 0 GiB, got {self.data_memory}")
        if self.data_workers < 0:
            raise ValueError(f"--data-workers must be >= 0, got {self.data_workers}")
        for name in ("batch_size", "iterations", "n_critic", "z_dim", "width", "log_every",
                     "sample_every", "ckpt_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("lr_g", "lr_d"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if self.penalty_weight is not None and not self.penalty_weight > 0:
            raise ValueError(f"--penalty-weight must be > 0, got {self.penalty_weight}")
        if self.penalty_every is not None and self.penalty_every < 1:
            raise ValueError(f"--penalty-every must be >= 1, got {self.penalty_every}")
        from .augment import parse_policy

        parse_policy(self.augment)
        if not 0 <= self.augment_p <= 1:
            raise ValueError(f"--augment-p must be in [0, 1], got {self.augment_p}")
        if not 0 <= self.ada_target < 1:
            raise ValueError(f"--ada-target must be in [0, 1), got {self.ada_target}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"--{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"--ema must be in [0, 1), got {self.ema}")
        if self.ema_rampup < 0 or (self.ema_rampup > 0 and self.ema == 0):
            raise ValueError(f"--ema-rampup must be >= 0 and needs --ema > 0, got {self.ema_rampup}")
        if self.clip is not None and self.clip <= 0:
            raise ValueError(f"--clip must be > 0, got {self.clip}")
        for name in ("feature_matching", "lecam"):
            value = getattr(self, name)
            if not (value >= 0 and value < float("inf")):
                raise ValueError(f"--{name.replace('_', '-')} must be a finite weight >= 0, got {value}")
        if self.model == "vaegan":
            self.validate_vaegan()
        if self.max_rollbacks < 0:
            raise ValueError(f"--max-rollbacks must be >= 0, got {self.max_rollbacks}")
        if self.fid_every < 0 or self.fid_every_samples < 2 or not 0 < self.fid_budget <= 1:
            raise ValueError("--fid-every must be >= 0, --fid-every-samples >= 2 and --fid-budget in (0, 1], got "
                             f"{self.fid_every}, {self.fid_every_samples}, {self.fid_budget}")
        if not self.dist_timeout > 0:
            raise ValueError(f"--dist-timeout must be > 0 seconds, got {self.dist_timeout}")
        if self.fid_samples < 0:
            raise ValueError(f"--fid-samples must be >= 0, got {self.fid_samples}")
        parse_metrics(self.metrics, self.conditional)
        if self.condition_on and self.conditional:
            raise ValueError("--conditional (class labels) and --condition-on (attribute vectors) are two ways of "
                             "conditioning a model: choose one")
        return self

    def validate_vaegan(self):
        if self.batch_size % 2:
            raise ValueError(f"--model vaegan needs an even --batch-size (half of D's fakes are reconstructions), "
                             f"got {self.batch_size}")
        if self.vae_layer < 1:
            raise ValueError(f"--vae-layer must be >= 1 (D's first feature layer is 1), got {self.vae_layer}")
        for name in ("vae_gamma", "vae_kl"):
            value = getattr(self, name)
            if not (value >= 0 and value < float("inf")):
                raise ValueError(f"--{name.replace('_', '-')} must be a finite weight >= 0, got {value}")
        for name, off in (("augment", "none"), ("feature_matching", 0.0)):
            if getattr(self, name) != off:
                raise ValueError(f"--{name.replace('_', '-')} is not supported with --model vaegan (its "
                                 "reconstruction term reads D's features of unaugmented images); leave it out")

    @property
    def architecture(self):
        """The G and D family the model builds: the model itself, or a VAE-GAN's backbone."""
        return self.vae_backbone if self.model == "vaegan" else self.model

    def resolve_defaults(self):
        """Fill each field left as None with its model's default (MODEL_DEFAULTS), so config.json and checkpoints
        hold what was trained. An EMA turned off (--ema 0) gets no ramp-up; a run that is not scored (--fid-samples
        0, or 2-D points) no FID curve."""
        from .data import MIXTURES

        for name, value in VAE_DEFAULTS[self.vae_backbone].items():  # before the backbone's: they take precedence
            if self.model == "vaegan" and getattr(self, name) is None:
                setattr(self, name, value)
        for name, value in MODEL_DEFAULTS[self.architecture].items():
            if getattr(self, name) is None:
                setattr(self, name, 0.0 if name == "ema_rampup" and self.ema == 0 else value)
        if self.penalty_weight is None and self.penalty == "r1" and self.model in R1_GAMMA_DEFAULTS:
            self.penalty_weight = R1_GAMMA_DEFAULTS[self.model]
        if self.fid_every is None:
            self.fid_every = FID_EVERY_DEFAULT if self.fid_samples > 0 and self.dataset not in MIXTURES else 0

    @property
    def resolved_penalty_weight(self):
        """--penalty-weight, or the penalty's default (PENALTY_DEFAULTS)."""
        return self.penalty_weight if self.penalty_weight is not None else PENALTY_DEFAULTS[self.penalty][0]

    @property
    def resolved_penalty_every(self):
        """--penalty-every, or the penalty's default (PENALTY_DEFAULTS)."""
        return self.penalty_every if self.penalty_every is not None else PENALTY_DEFAULTS[self.penalty][1]

    def penalized_d_steps(self, iteration):
        """For each of the n_critic D steps of ``iteration``: whether it adds the penalty (every
        penalty_every-th D step counted over the whole run, the lazy regularisation interval)."""
        first = iteration * self.n_critic
        return [self.penalty != "none" and d_index % self.resolved_penalty_every == 0
                for d_index in range(first, first + self.n_critic)]

    def to_dict(self):
        return asdict(self)

    def write_json(self, path):
        """The resolved configuration as JSON (what `--config` reads back)."""
        from .io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, values):
        """A saved configuration (a checkpoint's, a run's config.json) back as a TrainConfig."""
        values = dict(values)
        if "steps" in values and "iterations" not in values:  # checkpoints written before the rename
            values["iterations"] = values.pop("steps")
        values.setdefault("width", LEGACY_WIDTH)  # a saved config without it had width 64
        if values.get("penalty_weight") is None and values.get("penalty", "r1") != "none":
            # saved before R1_GAMMA_DEFAULTS: the weight was PENALTY_DEFAULTS' (a config saved since holds its own)
            values["penalty_weight"] = PENALTY_DEFAULTS[values.get("penalty", "r1")][0]
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# Fields whose default is None, and so whose type the default does not tell.
_OPTIONAL_TYPES = {"width": int, "batch_size": int, "iterations": int, "lr_g": float, "lr_d": float, "beta1": float,
                   "beta2": float, "ema": float,
                   "ema_rampup": float, "penalty_weight": float, "penalty_every": int, "clip": float,
                   "image_size": int, "channels": int, "fid_every": int, "vae_layer": int, "vae_gamma": float,
                   "data_memory": float}


def field_type(name):
    """The Python type of TrainConfig field ``name`` (the flag's `type=`; what a config file must hold)."""
    if name in _OPTIONAL_TYPES:
        return _OPTIONAL_TYPES[name]
    default = getattr(TrainConfig(), name)
    return str if default is None else type(default)


def load_config_file(path):
    """Read a TOML or JSON file of TrainConfig fields into a dict; unknown keys or wrong types raise ValueError.

    Keys may use dashes or underscores (``lr-g`` or ``lr_g``); ``steps`` is read as ``iterations``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config: {path} does not exist or is not a file")
    text = path.read_text(encoding="utf-8")
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
    if not isinstance(raw, dict):
        raise ValueError(f"--config: {path} must hold a table of settings, got {type(raw).__name__}")
    values = {key.replace("-", "_"): value for key, value in raw.items()}
    if "steps" in values and "iterations" not in values:
        values["iterations"] = values.pop("steps")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"--config: {path} has unknown settings {', '.join(unknown)}")
    for name, value in values.items():
        kind = field_type(name)
        ok = value is None or isinstance(value, kind) or (kind is float and isinstance(value, int))
        if not ok or (kind is not bool and isinstance(value, bool)):
            raise ValueError(f"--config: {path}: {name} must be {kind.__name__}, got {value!r}")
        if kind is float and value is not None:
            values[name] = float(value)
    return values
