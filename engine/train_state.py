"""G, D, their optimizers, loss scalers and EMA, the device-side running statistics, and what the host reads of
them between steps (the interval's mean statistics, the divergence flag, the sampling generator)."""
import copy
import math

import torch

from .. import models
from . import losses
from .augment import Augment
from .distributed import BatchDraw, World, local_batch_norm_
from .steps import D_STATS, G_STATS, VAE_STATS, Steps

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# The EMA of G recomputes its BatchNorm statistics over this many latents (batches of 512) before it samples.
EMA_NORM_SAMPLES, EMA_NORM_BATCH = 2048, 512
EMA_NORM_SEED = 24601  # its latents: the same every time, from a generator of their own


def make_optimizer(kind, params, lr, betas, device):
    """Adam (one fused kernel over all parameters) or RMSprop (one multi-tensor pass), on every device: the
    per-tensor path reads each parameter's step count back to the host every step. On CUDA also capturable, with
    a tensor learning rate that captured graphs read."""
    on_cuda = torch.device(device).type == "cuda"
    lr = torch.tensor(lr, device=device) if on_cuda else lr
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True, capturable=on_cuda)
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, foreach=True, capturable=on_cuda)
    raise ValueError(f"unknown optimizer {kind!r}")


def set_lr(optimizer, lr):
    """Change the learning rate in place, so a captured graph sees the new value on its next replay."""
    for group in optimizer.param_groups:
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


class TrainState(Steps):
    """G, D, their optimizers, loss scalers and EMA; the step functions over them come from Steps."""

    def __init__(self, cfg, G, D, pixels, labels, num_classes, device, precision, channels_last=False, world=None,
                 streamed=False):
        self.cfg, self.G, self.D = cfg, G, D
        self.device = torch.device(device)
        # This process's rows of the global batch; in a single process, the whole batch.
        self.world = world or World()
        self.draw = BatchDraw(cfg.batch_size, self.world, self.device)
        # BatchNorm running statistics (G's; D's when it has BatchNorm), averaged across ranks with the gradients.
        self.norm_buffers = [b for m in (G, D) for module in m.modules()
                             if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
                             for b in module.buffers() if b.is_floating_point()]
        # D's spectrally normalised layers (--spectral-norm): each D step refines their singular vectors first.
        self.spectral_layers = models.spectral_norm_layers(D)
        # The resident data: uint8 (N, C, H, W) pixels, or float32 images in [-1, 1] (float sources, 2-D points).
        # streamed: ``pixels`` is one batch, this rank's rows, refilled from disk before each step that reads it.
        self.pixels, self.labels, self.num_classes = pixels, labels, num_classes
        self.streamed = streamed
        self.data_identity = None  # what the data are and how they are read (engine.data.identity; the session's)
        # what G and D are conditioned on: None, "class" (labels are int64 classes) or "attributes" (labels are
        # float32 (N, K) attribute vectors of -1/1, and fake batches take the vectors of random real rows)
        self.condition = "class" if cfg.conditional else "attributes" if cfg.condition_on else None
        self.conditional = self.condition is not None
        self.vaegan = cfg.model == "vaegan"
        if self.vaegan and not 1 <= cfg.vae_layer <= len(D.features):
            raise ValueError(f"--vae-layer {cfg.vae_layer}: this critic has feature layers 1..{len(D.features)}")
        self.g_stat_names = G_STATS + (VAE_STATS if self.vaegan else ())
        self.amp_dtype = AMP_DTYPES[precision]
        self.precision = precision
        self.channels_last = channels_last
        betas = (cfg.beta1, cfg.beta2)
        self.opt_d = make_optimizer(cfg.optimizer, D.parameters(), cfg.lr_d, betas, self.device)
        self.opt_g = make_optimizer(cfg.optimizer, G.parameters(), cfg.lr_g, betas, self.device)
        # fp16 needs loss scaling; a disabled scaler passes losses and steps through untouched.
        use_scaler = precision == "fp16"
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.G_ema = None
        if cfg.ema > 0:
            # never trained: under torchrun with --sync-bn its BatchNorm statistics stay its own (rank 0 samples)
            self.G_ema = local_batch_norm_(copy.deepcopy(G)).eval().requires_grad_(False)
        self.ema_images = torch.zeros((), device=self.device)  # images G has trained on, for the EMA ramp-up
        # EMA updates so far (on the device: the captured G step counts too), and the count its BatchNorm statistics
        # were last recomputed at (host; None: recompute before the next sample).
        self.ema_updates = torch.zeros((), dtype=torch.long, device=self.device)
        self.ema_norm_updates = None
        # LeCam's moving averages of D's mean (real, fake) scores, kept on the device and in checkpoints.
        self.lecam_ema = torch.zeros(2, device=self.device)
        # Running sums of the step statistics, read by the trainer every log interval, never inside a step.
        self.d_stats_sum = torch.zeros(len(D_STATS), device=self.device)
        self.g_stats_sum = torch.zeros(len(self.g_stat_names), device=self.device)
        self.d_steps_done = torch.zeros((), device=self.device)  # since the last stats reset; G steps: / n_critic
        # Divergence guard: the iteration (counted from the last stats reset) of the first non-finite loss or
        # parameter, -1 while all is finite; set by torch ops inside the steps, read by the trainer.
        self.nonfinite_at = torch.full((), -1, dtype=torch.long, device=self.device)
        # Lazy regularisation: a penalty applied on every k-th D step weighs k times as much (the same strength).
        self.penalty_step_weight = cfg.penalty_weight * cfg.penalty_every
        # Differentiable augmentation of every image D sees (none by default); its strength p lives on the device.
        self.augment = Augment(cfg.augment, cfg.augment_p, cfg.ada_target, cfg.batch_size, self.device)
        # "explicit" or "autograd" (None without a penalty); explicit asked of a critic that cannot raises here.
        self.penalty_grad = losses.resolve_penalty_grad(D, cfg.penalty_grad) if cfg.penalty != "none" else None
        if cfg.compile:
            if self.world.launched:
                raise ValueError("--compile is not supported under torchrun yet (the steps' all-reduce is not traced); "
                                 "drop --compile, the captured steps remain")
            self.compile_steps()

    @torch.no_grad()
    def recompute_ema_norm_statistics(self):
        """Set the EMA's BatchNorm running statistics to those of its own activations: the mean over
        EMA_NORM_SAMPLES fixed latents, in train mode. The live G's statistics (which the EMA used to copy) belong
        to other weights; with them the EMA scored worse than G, with its own better
        (bench/results/2026-12-02_ema-batchnorm-cpu/). Skipped when the EMA has not changed since the last time
        (one host read of its update count: this runs as side work, never inside a step); the training random
        streams do not move."""
        norms = [m for m in self.G_ema.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        updates = int(self.ema_updates)
        if not norms or updates == self.ema_norm_updates:
            return
        gen = torch.Generator(self.device).manual_seed(EMA_NORM_SEED)
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches below
        self.G_ema.train()
        try:
            for _ in range(EMA_NORM_SAMPLES // EMA_NORM_BATCH):
                z = torch.randn(EMA_NORM_BATCH, self.cfg.z_dim, device=self.device, generator=gen)
                labels = None
                if self.condition == "class":
                    labels = torch.randint(0, self.num_classes, (EMA_NORM_BATCH,), device=self.device, generator=gen)
                elif self.condition == "attributes":
                    labels = models.draw_attributes(self.G_ema, EMA_NORM_BATCH, gen)
                self.G_ema(z, labels)
        finally:
            self.G_ema.eval()
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
        self.ema_norm_updates = updates

    # -- host side, outside the steps --------------------------------------------------------------------------------
    def read_and_reset_stats(self):
        """Mean step statistics since the last call (one device->host copy), then zero the sums. Under torchrun, the
        mean over ranks too (every rank calls this at the same iterations)."""
        self.world.average_([self.d_stats_sum, self.g_stats_sum])
        g_steps = self.d_steps_done / self.cfg.n_critic  # one G step after every n_critic D steps
        sums = [self.d_stats_sum / self.d_steps_done.clamp(min=1), self.g_stats_sum / g_steps.clamp(min=1)]
        if self.augment.enabled:
            sums.append(self.augment.p.reshape(1).float())
        values = torch.cat(sums).tolist()  # the one read back to the host
        for t in (self.d_stats_sum, self.g_stats_sum, self.d_steps_done):
            t.zero_()
        out = dict(zip(D_STATS + self.g_stat_names, values))
        if self.augment.enabled:
            out["augment_p"] = values[-1]
        if self.precision == "fp16":
            out["loss_scale_d"] = self.scaler_d.get_scale()
            out["loss_scale_g"] = self.scaler_g.get_scale()
        return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}

    def first_nonfinite_iteration(self, interval_start):
        """The iteration (1-based, as logged) of the first non-finite loss or parameter since ``interval_start``
        (the iteration when the stats were last reset), or None. One device->host copy."""
        offset = int(self.nonfinite_at.item())
        none = -2**62
        offset = -self.world.max(-offset if offset >= 0 else none)  # the earliest on any rank
        return None if offset == -none else interval_start + offset + 1

    def reset_divergence_flag(self):
        self.nonfinite_at.fill_(-1)

    def set_learning_rates(self, lr_g=None, lr_d=None):
        if lr_g is not None:
            set_lr(self.opt_g, lr_g)
        if lr_d is not None:
            set_lr(self.opt_d, lr_d)

    def sampling_generator(self):
        """The EMA of G when kept (its BatchNorm statistics recomputed for its current weights), else G itself."""
        if self.G_ema is None:
            return self.G
        self.recompute_ema_norm_statistics()
        return self.G_ema
