"""The D and G steps as plain functions over static device tensors.

Each step draws its own batch indices, z and interpolation weights on the device, runs forward and backward
under autocast, updates its optimizer (and G's EMA) and folds its statistics into device-side running sums.
Nothing in a step reads a value back to the host, so the very same function runs eagerly (the reference) or
captured once in a CUDA graph and replayed (engine.graphs). Under torchrun each rank runs its rows of the global
batch and the steps average gradients across ranks before the optimizer (engine.distributed).

The steps are the methods of Steps, the base class of engine.train_state.TrainState: they run over the models,
optimizers and device buffers that TrainState builds, and TrainState adds what runs on the host, between steps.
"""
import math
from contextlib import nullcontext

import torch
from torch.profiler import record_function

from . import losses
from .config import PENALIZES_FAKE, PENALIZES_REAL
from .data import to_unit_range

D_STATS = ("d_loss", "penalty", "real_score", "fake_score")  # penalty: the gradient penalties plus LeCam
LECAM_EMA_DECAY = 0.99  # the LeCam authors' decay of the moving averages of D's scores
G_STATS = ("g_loss", "g_fake_score")
VAE_STATS = ("vae_kl", "vae_recon")  # a VAE-GAN's G step also reports its KL and feature-reconstruction terms


class Steps:
    """The D step, the G step and their pieces, over a TrainState's models, optimizers and device buffers."""

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
        params = list(self.G.parameters())
        if isinstance(weight, torch.Tensor):  # the ramped weight lives on the device: as a tensor per parameter it
            #                                   is never read back (a single tensor would be, as a Python number)
            torch._foreach_lerp_(ema_params, params, [weight] * len(ema_params))
        else:
            torch._foreach_lerp_(ema_params, params, weight)
        self.ema_updates += 1

    @torch.no_grad()
    def watch_finite(self, loss, model, iteration_in_interval):
        """Record the first iteration whose loss or updated parameters are not finite (no host sync)."""
        finite = torch.isfinite(loss) & torch.isfinite(torch.stack(torch._foreach_norm(list(model.parameters())))).all()
        first = (self.nonfinite_at < 0) & ~finite
        self.nonfinite_at.copy_(torch.where(first, iteration_in_interval.long(), self.nonfinite_at))
