"""The D and G steps as plain functions over static device tensors.

Each step draws its own batch indices, z and interpolation weights on the device, runs forward and backward
under autocast, updates its optimizer (and G's EMA) and folds its statistics into device-side running sums.
Nothing in a step reads a value back to the host, so the very same function runs eagerly (the reference) or
captured once in a CUDA graph and replayed (engine.graphs). Under torchrun each rank runs its rows of the global
batch and the steps average gradients across ranks before the optimizer (engine.distributed).
"""
import copy
import math
from contextlib import nullcontext

import torch
from torch.profiler import record_function

from .. import models
from . import losses
from .augment import Augment
from .config import PENALIZES_FAKE, PENALIZES_REAL
from .data import to_unit_range
from .distributed import BatchDraw, World, local_batch_norm_

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
D_STATS = ("d_loss", "penalty", "real_score", "fake_score")  # penalty: the gradient penalties plus LeCam
LECAM_EMA_DECAY = 0.99  # the LeCam authors' decay of the moving averages of D's scores
G_STATS = ("g_loss", "g_fake_score")
VAE_STATS = ("vae_kl", "vae_recon")  # a VAE-GAN's G step also reports its KL and feature-reconstruction terms
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


class TrainState:
    """G, D, their optimizers, loss scalers and EMA, and the two step functions over them."""

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
        self.penalty_step_weight = cfg.resolved_penalty_weight * cfg.resolved_penalty_every
        # Differentiable augmentation of every image D sees (none by default); its strength p lives on the device.
        self.augment = Augment(cfg.augment, cfg.augment_p, cfg.ada_target, cfg.batch_size, self.device)
        # "explicit" or "autograd" (None without a penalty); explicit asked of a critic that cannot raises here.
        self.penalty_grad = losses.resolve_penalty_grad(D, cfg.penalty_grad) if cfg.penalty != "none" else None
        if cfg.compile:
            if self.world.launched:
                raise ValueError("--compile is not supported under torchrun yet (the steps' all-reduce is not traced); "
                                 "drop --compile, the captured steps remain")
            self.compile_steps()

    def compile_steps(self, backend="inductor"):
        """Replace d_step and g_step by torch.compile'd versions of themselves.

        Only first-order steps compile: a penalty must use the explicit input gradient, since torch.compile
        raises on double backward. The graph runner's eager warm-up calls then compile (one variant with and one
        without the penalty) before it captures."""
        if self.penalty_grad == "autograd":
            raise ValueError("--compile with a penalty needs the explicit input gradient (torch.compile cannot run "
                             "double backward): use --penalty-grad auto or explicit with a critic that supports it")
        self.d_step = torch.compile(self.d_step, backend=backend)
        self.g_step = torch.compile(self.g_step, backend=backend)

    # -- pieces shared by both steps ------------------------------------------------------------------------------
    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype, cache_enabled=False)

    def real_batch(self):
        """A batch gathered on the device from the resident dataset (indices drawn with replacement), or the streamed
        batch in the input buffer, as floats."""
        if self.streamed:
            real, idx = to_unit_range(self.pixels), None
        else:
            idx = self.draw.randint(0, self.pixels.shape[0])  # rows of this process's data (its shard under torchrun)
            real = to_unit_range(self.pixels.index_select(0, idx))  # uint8 -> [-1, 1] here: inside the captured step
        if self.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        labels = self.labels.index_select(0, idx) if self.conditional else None  # a streamed set is unlabelled
        return real, labels

    @property
    def g_step_reads_real(self):
        """Whether the G step reads a real batch (rpgan's G loss, feature matching, the VAE-GAN's reconstructions)."""
        return self.vaegan or self.cfg.loss in losses.G_LOSSES_READING_REAL or self.cfg.feature_matching > 0

    def latent_batch(self):
        z = self.draw.randn(self.cfg.z_dim)
        labels = None
        if self.condition == "class":
            labels = self.draw.randint(0, self.num_classes)
        elif self.condition == "attributes":  # the joint distribution of the data's attributes, row by row
            labels = self.labels.index_select(0, self.draw.randint(0, self.labels.shape[0]))
        return z, labels

    def average_across_ranks(self, model):
        """Under torchrun: average ``model``'s gradients and the BatchNorm statistics across ranks (one all-reduce)."""
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        self.world.average_(grads + self.norm_buffers)

    # -- the steps --------------------------------------------------------------------------------------------------
    def d_step(self, penalize=False):
        """One discriminator (critic) update; ``penalize`` adds the gradient penalty (WGAN-GP, R1 and/or R2) on this
        step. A penalty at real (R1) or generated (R2) samples takes its scores from its own forward pass."""
        cfg = self.cfg
        self.D.requires_grad_(True)
        if self.spectral_layers:
            with record_function("spectral norm"):
                for layer in self.spectral_layers:
                    layer.power_iteration_()
        real, real_labels = self.real_batch()
        z, fake_labels = self.latent_batch()
        with record_function("G forward"), torch.no_grad(), self.autocast():
            if self.vaegan:  # D's fakes: prior samples and reconstructions of this step's reals, half each
                codes, fake_labels, _, _ = self.vaegan_codes(real, real_labels, z, fake_labels)
                fake = self.G(codes, fake_labels)
            else:
                fake = self.G(z, fake_labels)
        real, fake = self.augment(real, self.draw), self.augment(fake, self.draw)
        with self.autocast():
            penalty = torch.zeros((), device=self.device)
            if penalize and cfg.penalty in PENALIZES_REAL:
                with record_function("penalty"):
                    r1, real_scores = losses.r1_penalty(self.D, real, real_labels, self.penalty_step_weight,
                                                        impl=cfg.kernels, grad_method=self.penalty_grad)
                    penalty = penalty + r1
            else:
                with record_function("D forward"):
                    real_scores = self.D(real, real_labels)
            if penalize and cfg.penalty in PENALIZES_FAKE:
                with record_function("penalty"):
                    r2, fake_scores = losses.r2_penalty(self.D, fake.to(real.dtype), fake_labels,
                                                        self.penalty_step_weight, impl=cfg.kernels,
                                                        grad_method=self.penalty_grad)
                    penalty = penalty + r2
            else:
                with record_function("D forward"):
                    fake_scores = self.D(fake, fake_labels)
            loss = losses.d_loss(cfg.loss, real_scores.float(), fake_scores.float())
            if penalize and cfg.penalty == "wgan-gp":
                with record_function("penalty"):
                    penalty = losses.wgan_gp_penalty(self.D, real, fake.to(real.dtype), real_labels,
                                                     self.penalty_step_weight, alpha=self.draw.rand(dtype=real.dtype),
                                                     impl=cfg.kernels, grad_method=self.penalty_grad)
            if cfg.lecam > 0:
                penalty = penalty + cfg.lecam * self.lecam_step(real_scores.float(), fake_scores.float())
        with record_function("D backward"):
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler_d.scale(loss + penalty).backward()
            self.average_across_ranks(self.D)
        with record_function("D optimizer"):
            self.scaler_d.step(self.opt_d)
            self.scaler_d.update()
            if cfg.clip is not None:
                losses.clip_weights(self.D, cfg.clip)
        self.augment.adjust(real_scores.detach(), self.world)
        stats = torch.stack([loss.detach(), penalty.detach().float(), real_scores.detach().float().mean(),
                             fake_scores.detach().float().mean()])
        self.d_stats_sum += stats
        self.watch_finite(stats[0] + stats[1], self.D, self.d_steps_done // cfg.n_critic)
        self.d_steps_done += 1
        return stats

    def lecam_step(self, real_scores, fake_scores):
        """The LeCam regulariser against the moving averages so far, then the averages take this step's means."""
        reg = losses.lecam_regularizer(real_scores, fake_scores, self.lecam_ema[0], self.lecam_ema[1])
        with torch.no_grad():
            means = torch.stack([real_scores.detach().mean(), fake_scores.detach().mean()])
            self.lecam_ema.lerp_(means, 1 - LECAM_EMA_DECAY)
        return reg

    def vaegan_codes(self, real, real_labels, z, labels):
        """A VAE-GAN's batch of codes: the first half of ``z`` as prior samples, then codes drawn from the encoder's
        q(z | x) for the second half of ``real`` (the rest of ``z`` as their noise). Returns (codes, their labels,
        mu, log sigma^2); fakes decoded from the codes pair with ``real`` row by row (rpgan), half of them its
        reconstructions."""
        split = z.shape[0] - z.shape[0] // 2
        mu, log_var = self.G.encode(real[split:], real_labels[split:] if self.conditional else None)
        codes = torch.cat([z[:split], self.G.draw(mu, log_var, z[split:])])
        if self.conditional:
            labels = torch.cat([labels[:split], real_labels[split:]])
        return codes, labels, mu, log_var

    def vaegan_g_losses(self):
        """A VAE-GAN's G step losses (Larsen et al. 2016): the decoder's (the GAN loss on prior samples and
        reconstructions, plus gamma times the reconstruction error in D's layer ``vae_layer``) and the encoder's
        (vae_kl times the KL to the prior, plus that reconstruction error). Returns (decoder loss, encoder loss,
        D's scores of the fakes, KL, reconstruction)."""
        cfg = self.cfg
        real, real_labels = self.real_batch()
        z, labels = self.latent_batch()
        split = z.shape[0] - z.shape[0] // 2
        with record_function("D forward"), torch.no_grad(), self.autocast():
            real_scores, real_features = self.D.scores_and_layer_features(real, real_labels, cfg.vae_layer)
        with record_function("G forward"), self.autocast():
            codes, labels, mu, log_var = self.vaegan_codes(real, real_labels, z, labels)
            fake = self.G(codes, labels)
            if self.channels_last:
                fake = fake.contiguous(memory_format=torch.channels_last)
            fake_scores, fake_features = self.D.scores_and_layer_features(fake, labels, cfg.vae_layer)
            gan = losses.g_loss(cfg.loss, fake_scores.float(), real_scores.float())
            recon = losses.feature_reconstruction(fake_features[split:], real_features[split:])
            kl = losses.kl_divergence(mu, log_var)
        return gan + cfg.vae_gamma * recon, cfg.vae_kl * kl + recon, fake_scores, kl, recon

    def g_step(self):
        """One generator update through a frozen D, then the EMA of G's weights. rpgan and feature matching also
        read D on a real batch, without gradients (constants of G's loss). A VAE-GAN's step trains its encoder and
        decoder together, each on its own loss (vaegan_g_losses)."""
        cfg = self.cfg
        self.D.requires_grad_(False)  # no weight gradients for D in G's step
        if self.vaegan:
            return self.finish_g_step(*self.vaegan_g_losses())
        z, labels = self.latent_batch()
        real_scores = real_features = None
        if self.g_step_reads_real:
            real, real_labels = self.real_batch()
            with record_function("D forward"), torch.no_grad(), self.autocast():
                real_scores, real_features = self.D.scores_and_features(self.augment(real, self.draw), real_labels)
        with record_function("G forward"), self.autocast():
            fake = self.augment(self.G(z, labels), self.draw)  # gradients flow through the augmentation into G
            if self.channels_last:
                fake = fake.contiguous(memory_format=torch.channels_last)
            if cfg.feature_matching > 0:
                fake_scores, fake_features = self.D.scores_and_features(fake, labels)
            else:
                fake_scores = self.D(fake, labels)
            loss = losses.g_loss(cfg.loss, fake_scores.float(),
                                 None if real_scores is None else real_scores.float())
            if cfg.feature_matching > 0:
                loss = loss + cfg.feature_matching * losses.feature_matching_loss(real_features, fake_features)
        return self.finish_g_step(loss, None, fake_scores)

    def finish_g_step(self, loss, encoder_loss, fake_scores, *extra_stats):
        """Backward, G's optimizer step, the EMA and the step's statistics. ``encoder_loss`` (a VAE-GAN's): the
        encoder's parameters take their gradient from it and the decoder's from ``loss``, in two backward passes
        over the one graph, so each loss trains only its own network."""
        cfg = self.cfg
        with record_function("G backward"):
            self.opt_g.zero_grad(set_to_none=True)
            if encoder_loss is None:
                self.scaler_g.scale(loss).backward()
            else:
                self.scaler_g.scale(encoder_loss).backward(inputs=list(self.G.encoder.parameters()),
                                                           retain_graph=True)
                self.scaler_g.scale(loss).backward(inputs=list(self.G.decoder.parameters()))
            self.average_across_ranks(self.G)
        with record_function("G optimizer"):
            self.scaler_g.step(self.opt_g)
            self.scaler_g.update()
        self.D.requires_grad_(True)
        if self.G_ema is not None:
            with record_function("EMA"):
                self.update_ema()
        stats = torch.stack([loss.detach(), fake_scores.detach().float().mean(), *(s.detach() for s in extra_stats)])
        self.g_stats_sum += stats
        self.watch_finite(stats.sum(), self.G, self.d_steps_done // cfg.n_critic - 1)  # after this iteration's D steps
        return stats

    @torch.no_grad()
    def update_ema(self):
        """EMA of G's weights. With --ema-rampup r the average's half-life (in images) is at most r times the
        images seen so far (StyleGAN's ramp-up), so early weights do not linger in a short run's average."""
        ema_params = list(self.G_ema.parameters())
        weight = 1.0 - self.cfg.ema
        if self.cfg.ema_rampup > 0:
            batch = self.cfg.batch_size
            self.ema_images += batch
            half_life = batch * math.log(0.5) / math.log(self.cfg.ema)
            ramped = torch.clamp(self.ema_images * self.cfg.ema_rampup, min=1e-8, max=half_life)
            weight = 1.0 - torch.pow(0.5, batch / ramped)
        torch._foreach_lerp_(ema_params, list(self.G.parameters()), weight)
        self.ema_updates += 1

    @torch.no_grad()
    def recompute_ema_norm_statistics(self):
        """Set the EMA's BatchNorm running statistics to those of its own activations: the mean over
        EMA_NORM_SAMPLES fixed latents, in train mode. The live G's statistics (which the EMA used to copy) belong
        to other weights; with them the EMA scored worse than G, with its own better (bench/results/
        ema-batchnorm-cpu-2026-12-02.json). Skipped when the EMA has not changed since the last time (one host read
        of its update count: this runs as side work, never inside a step); the training random streams do not
        move."""
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

    @torch.no_grad()
    def watch_finite(self, loss, model, iteration_in_interval):
        """Record the first iteration whose loss or updated parameters are not finite (no host sync)."""
        finite = torch.isfinite(loss) & torch.isfinite(torch.stack(torch._foreach_norm(list(model.parameters())))).all()
        first = (self.nonfinite_at < 0) & ~finite
        self.nonfinite_at.copy_(torch.where(first, iteration_in_interval.long(), self.nonfinite_at))

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
