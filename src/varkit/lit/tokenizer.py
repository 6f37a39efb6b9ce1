"""``TokenizerModule``: trains VAR's multi-scale VQVAE with the VQGAN objective (VAR paper, Sec. 4).

A thin Lightning shell around the plain :class:`varkit.models.vqvae.VQVAE` (built by
:func:`varkit.models.vqvae.build_vqvae` from the ``tokenizer``/``quantizer``/``schedule`` config groups): it owns
the loss (pixel L1/L2 + quantizer loss + optional LPIPS + optional hinge GAN with VQGAN's adaptive weight), the two
AdamW optimisers with warm-up + cosine schedules, codebook accounting (usage and perplexity per scale, reduced
across ranks here, never in ``forward``) and dead-code restarts, and validation metrics (PSNR, SSIM, per-scale
usage).

Step counting: the module uses manual optimisation (``automatic_optimization = False``). Lightning counts every
*Lightning-wrapped* optimiser step in ``trainer.global_step``; the discriminator's optimiser is stepped through the
strategy directly (same precision handling, no count), so ``global_step`` counts generator updates = training
batches, and ``trainer.max_steps`` means what it says: the number of training batches. The learning-rate schedule
length is ``total_steps`` (the CLI passes ``trainer.max_steps``), never ``trainer.estimated_stepping_batches``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from varkit.errors import ConfigError
from varkit.lit.settings import CodebookSettings, GANSettings, LossSettings, OptimSettings, parse_settings
from varkit.models.vqvae import VQVAE, build_vqvae
from varkit.nn.discriminator import PatchDiscriminator
from varkit.nn.perceptual import build_perceptual_loss
from varkit.quantizers.codebook import (
    CodeUsage,
    codebook_health,
    codebook_of,
    reset_optimizer_rows,
    restart_dead_codes,
    scale_residuals,
    vocabulary_sizes_of,
)
from varkit.registry import to_plain
from varkit.training.losses import (
    adaptive_gan_weight,
    hinge_discriminator_loss,
    hinge_generator_loss,
    reconstruction_loss,
)
from varkit.training.optim import WarmupCosine, build_adamw, param_groups

__all__ = ["CodebookSettings", "GANSettings", "LossSettings", "OptimSettings", "TokenizerModule"]

logger = logging.getLogger(__name__)


def _last_decoder_layer(vae: VQVAE) -> Tensor:
    """The weight of the decoder's output convolution (where VQGAN balances the two gradients)."""
    head = getattr(vae.decoder, "head_conv", None)
    if isinstance(head, nn.Conv2d):
        return head.weight
    convs = [m for m in vae.decoder.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].weight


class TokenizerModule(L.LightningModule):
    """Lightning system training a multi-scale VQVAE.

    Args:
        tokenizer, quantizer, schedule: plain config mappings for :func:`build_vqvae` (the config groups).
        loss, gan, optim, codebook: mappings of :class:`LossSettings`, :class:`GANSettings`,
            :class:`OptimSettings`, :class:`CodebookSettings` fields (missing keys take the defaults).
        total_steps: length of the LR schedule in training batches (the CLI passes ``trainer.max_steps``).
        seed: seeds the dead-code restart draws (combined with the step, so a resumed run draws the same).
        grid_images: images kept from the first validation batch for the reconstruction grid callback.
        finetune: what trains (:data:`varkit.training.finetune.DEFAULT_TOKENIZER_FINETUNE`); frozen parameters
            stay out of the optimiser; ``decoder_only`` also turns dead-code restarts off (the codebook is fixed).
        initialize: called with the freshly built VQVAE before ``finetune`` is applied (not saved).
    """

    def __init__(
        self,
        tokenizer: Mapping[str, Any],
        quantizer: Mapping[str, Any],
        schedule: Any,
        loss: Mapping[str, Any] | None = None,
        gan: Mapping[str, Any] | None = None,
        optim: Mapping[str, Any] | None = None,
        codebook: Mapping[str, Any] | None = None,
        total_steps: int = 1000,
        seed: int = 0,
        grid_images: int = 8,
        finetune: Mapping[str, Any] | None = None,
        initialize: Callable[[VQVAE], Any] | None = None,
    ) -> None:
        super().__init__()
        plain = {
            "tokenizer": to_plain(tokenizer),
            "quantizer": to_plain(quantizer),
            "schedule": to_plain(schedule),
            "loss": to_plain(loss) or {},
            "gan": to_plain(gan) or {},
            "optim": to_plain(optim) or {},
            "codebook": to_plain(codebook) or {},
            "total_steps": int(total_steps),
            "seed": int(seed),
            "grid_images": int(grid_images),
            "finetune": to_plain(finetune) or {},
        }
        # plain containers only: a DictConfig here would break weights_only checkpoint loading
        self.save_hyperparameters(plain)
        self.automatic_optimization = False
        self.loss_settings = parse_settings(LossSettings, plain["loss"], "loss")
        self.gan_settings = parse_settings(GANSettings, plain["gan"], "gan")
        self.optim_settings = parse_settings(OptimSettings, plain["optim"], "optim")
        self.codebook_settings = parse_settings(CodebookSettings, plain["codebook"], "codebook")
        if total_steps < 1:
            raise ConfigError(f"total_steps must be positive (got {total_steps}); set trainer.max_steps")
        self.total_steps = int(total_steps)
        self.seed = int(seed)
        self.grid_images = int(grid_images)
        try:
            self.vae = build_vqvae(plain["tokenizer"], plain["quantizer"], plain["schedule"])
        except (TypeError, ValueError) as err:
            raise ConfigError(
                f"cannot build the tokenizer from the tokenizer/quantizer/schedule configs: {err}"
            ) from err
        if initialize is not None:
            initialize(self.vae)
        codebook_frozen, settings = False, {}
        if plain["finetune"]:
            from varkit.training.finetune import apply_tokenizer_finetune

            settings = apply_tokenizer_finetune(self.vae, plain["finetune"])
            codebook = codebook_of(self.vae.quantizer)
            codebook_frozen = codebook is not None and not codebook.weight.requires_grad
        try:
            self.discriminator = (
                PatchDiscriminator(image_channels=self.vae.image_channels, **self.gan_settings.discriminator)
                if self.gan_settings.enabled
                else None
            )
        except (TypeError, ValueError) as err:
            raise ConfigError(f"cannot build the discriminator from gan.discriminator: {err}") from err
        self.perceptual = (
            build_perceptual_loss(self.loss_settings.vgg_weights, self.loss_settings.lpips_weights)
            if self.loss_settings.perceptual_weight > 0
            else None
        )
        num_scales, codebook_size = len(self.vae.scales), int(self.vae.quantizer.codebook_size)
        self.train_usage = CodeUsage(num_scales, codebook_size)
        self.restart_usage = CodeUsage(num_scales, codebook_size)
        self._pool: deque[Tensor] = deque(maxlen=max(1, self.codebook_settings.pool_batches))
        self._val_counts = torch.zeros(num_scales, codebook_size, dtype=torch.float64)
        #: the last validation's per-scale codebook health (written beside the exported weights)
        self.codebook_health_report: dict[str, Any] | None = None
        self._restart_enabled = self.codebook_settings.restart and codebook_of(self.vae.quantizer) is not None
        if self._restart_enabled and codebook_frozen:
            logger.info("dead-code restart is off: the fine-tune freezes the codebook (finetune=%s)", settings)
            self._restart_enabled = False
        if self.codebook_settings.restart and not self._restart_enabled:
            logger.info("dead-code restart is off: the %s quantizer has no learned codebook", plain["quantizer"])
        from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.val_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)

    @classmethod
    def from_config(cls, cfg: Any, initialize: Callable[[VQVAE], Any] | None = None) -> TokenizerModule:
        """Build from a composed ``train_tokenizer`` config (schedule length from ``trainer.max_steps``)."""
        plain = to_plain(cfg)
        max_steps = (plain.get("trainer") or {}).get("max_steps")
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ConfigError(
                f"trainer.max_steps must be a positive number of training batches (got {max_steps!r}): the "
                "learning-rate schedule is computed from it"
            )
        return cls(
            tokenizer=plain["tokenizer"],
            quantizer=plain["quantizer"],
            schedule=plain["schedule"],
            loss=plain.get("loss"),
            gan=plain.get("gan"),
            optim=plain.get("optim"),
            codebook=plain.get("codebook"),
            total_steps=max_steps,
            seed=int(plain.get("seed", 0)),
            grid_images=int((plain.get("validation") or {}).get("grid_images", 8)),
            finetune=plain.get("finetune"),
            initialize=initialize,
        )

    # -- optimisation --------------------------------------------------------------------------------------------
    def _adamw(self, network: nn.Module, lr: float) -> torch.optim.AdamW:
        # the transformer stage's grouping: no decay on biases, norms and the codebook (an nn.Embedding: decay
        # would pull the codes towards zero)
        groups = param_groups(network, self.optim_settings.weight_decay)
        return build_adamw(groups, lr, betas=self.optim_settings.betas)

    def configure_optimizers(self) -> Any:
        settings = self.optim_settings
        schedule = WarmupCosine(settings.warmup_steps, self.total_steps, settings.min_lr_ratio)
        generator = self._adamw(self.vae, settings.lr)
        optimizers = [generator]
        if self.discriminator is not None:
            lr = settings.discriminator_lr if settings.discriminator_lr is not None else settings.lr
            optimizers.append(self._adamw(self.discriminator, lr))
        # stepped by training_step once per batch (manual optimisation); saved and restored by Lightning
        schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, schedule) for opt in optimizers]
        return optimizers, schedulers

    def _optimizers(self) -> list[Any]:
        optimizers = self.optimizers()
        return list(optimizers) if isinstance(optimizers, (list, tuple)) else [optimizers]

    def _schedulers(self) -> list[Any]:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return []
        return list(schedulers) if isinstance(schedulers, (list, tuple)) else [schedulers]

    def _clip(self, optimizer: Any) -> None:
        if self.optim_settings.grad_clip:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.optim_settings.grad_clip, gradient_clip_algorithm="norm"
            )

    # -- training ------------------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        optimizers = self._optimizers()
        step = self.global_step
        loss_cfg, gan_cfg = self.loss_settings, self.gan_settings

        reconstructions, quantized = self.vae(images)
        pixel = reconstruction_loss(reconstructions, images, loss_cfg.l1_weight, loss_cfg.l2_weight)
        autoencoder = pixel
        logs: dict[str, Tensor | float] = {"train/pixel_loss": pixel.detach(), "train/quant_loss": quantized.loss}
        if self.perceptual is not None:
            perceptual = self.perceptual(reconstructions, images).mean()
            autoencoder = autoencoder + loss_cfg.perceptual_weight * perceptual
            logs["train/perceptual_loss"] = perceptual.detach()
        total = autoencoder + loss_cfg.quantizer_weight * quantized.loss
        gan_active = self.discriminator is not None and step >= gan_cfg.start_step
        if gan_active:
            adversarial = hinge_generator_loss(self.discriminator(reconstructions))
            weight = torch.tensor(gan_cfg.weight, device=images.device)
            if gan_cfg.adaptive_weight:
                last_layer = _last_decoder_layer(self.vae)
                weight = weight * adaptive_gan_weight(
                    autoencoder, adversarial, last_layer, max_weight=gan_cfg.max_adaptive_weight
                )
            total = total + weight * adversarial
            logs["train/generator_adv_loss"] = adversarial.detach()
            logs["train/gan_weight"] = weight.detach()

        generator_optimizer = optimizers[0]
        generator_optimizer.zero_grad(set_to_none=True)
        self.manual_backward(total)
        self._clip(generator_optimizer)
        generator_optimizer.step()  # the only optimiser step Lightning counts: global_step == batches

        if gan_active:
            discriminator_optimizer = optimizers[1]
            # the generator's backward also reached the discriminator: start from clean gradients
            discriminator_optimizer.zero_grad(set_to_none=True)
            real_logits = self.discriminator(images.detach())
            fake_logits = self.discriminator(reconstructions.detach())
            disc_loss = hinge_discriminator_loss(real_logits, fake_logits)
            self.manual_backward(disc_loss)
            self._clip(discriminator_optimizer)
            # stepped through the strategy (precision plugin included) but outside Lightning's step counter
            self.trainer.strategy.optimizer_step(discriminator_optimizer.optimizer, closure=lambda: None, model=self)
            logs["train/disc_loss"] = disc_loss.detach()
            logs["train/logits_real"] = real_logits.detach().float().mean()
            logs["train/logits_fake"] = fake_logits.detach().float().mean()
        for scheduler in self._schedulers():
            scheduler.step()

        logs["train/loss"] = total.detach()
        logs["train/lr"] = generator_optimizer.param_groups[0]["lr"]
        self.log_dict(logs, on_step=True, on_epoch=False, prog_bar=False)
        self.log("loss", total.detach(), prog_bar=True, on_step=True, logger=False)
        self._codebook_health(images, quantized.code_counts)
        return total.detach()

    # -- codebook health -----------------------------------------------------------------------------------------
    def _reduce_counts(self, counts: Tensor) -> Tensor:
        """Sum per-rank code counts over all ranks (identical result on every rank)."""
        return self.trainer.strategy.reduce(counts.detach().double(), reduce_op="sum")

    def _codebook_health(self, images: Tensor, code_counts: Tensor) -> None:
        settings = self.codebook_settings
        counts = self._reduce_counts(code_counts)
        self.train_usage.update(counts)
        self.restart_usage.update(counts)
        if self._restart_enabled:
            self._pool.append(images.detach())
        step = self.global_step  # already counts this batch's generator step
        if settings.usage_window > 0 and step % settings.usage_window == 0:
            health = codebook_health(self.train_usage.counts, vocabulary_sizes_of(self.vae.quantizer, self.vae.scales))
            values = {"train/codebook/usage_all": float(health["usage_all"])}  # type: ignore[arg-type]
            for key in ("usage", "perplexity", "dead"):
                values.update({f"train/codebook/{key}_s{k}": float(v) for k, v in enumerate(health[key])})  # type: ignore[arg-type]
            self.log_dict(values, on_step=True, on_epoch=False)
            self.train_usage.reset()
        due = settings.restart_every > 0 and step % settings.restart_every == 0
        in_window = settings.restart_until is None or step <= settings.restart_until
        if self._restart_enabled and due and in_window:
            restarted = self.restart_dead_codes()
            self.log("train/codebook/restarted", float(restarted), on_step=True, on_epoch=False)

    @torch.no_grad()
    def restart_dead_codes(self) -> int:
        """Re-initialise codes unused (at every scale) since the last restart; returns how many were restarted.

        Every rank computes the same dead set (counts are reduced across ranks); rank 0's draws are broadcast so
        that all replicas keep one codebook.
        """
        codebook = codebook_of(self.vae.quantizer)
        dead = self.restart_usage.dead_codes(self.codebook_settings.dead_threshold)
        self.restart_usage.reset()
        if codebook is None or not bool(dead.any()) or not self._pool:
            return 0
        # restored pools may still sit on the CPU (checkpoints are restored before the model moves)
        images = torch.cat([batch.to(self.device) for batch in self._pool])
        latents = self.vae.encode_latents(images).float()
        candidates = scale_residuals(self.vae.quantizer, latents, self.vae.scales)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.global_step)
        rows = restart_dead_codes(codebook, dead, candidates, generator, self.codebook_settings.restart_noise)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(codebook.weight.data, src=0)
        reset_optimizer_rows(self._optimizers()[0].optimizer, codebook.weight, rows)
        logger.debug("step %d: restarted %d dead codes", self.global_step, rows.numel())
        return int(rows.numel())

    # -- validation ----------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_counts = torch.zeros_like(self._val_counts)

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        reconstructions, quantized = self.vae(images)
        reconstructions = reconstructions.float().clamp(-1.0, 1.0)
        targets = images.float()
        pixel = reconstruction_loss(
            reconstructions, targets, self.loss_settings.l1_weight, self.loss_settings.l2_weight
        )
        self.val_psnr.update((reconstructions + 1) / 2, (targets + 1) / 2)
        self.val_ssim.update((reconstructions + 1) / 2, (targets + 1) / 2)
        self._val_counts += quantized.code_counts.detach().to("cpu", torch.float64)
        self.log("val/pixel_loss", pixel, on_epoch=True, sync_dist=True, batch_size=images.shape[0])
        self.log("val/psnr", self.val_psnr, on_epoch=True, prog_bar=True)
        self.log("val/ssim", self.val_ssim, on_epoch=True)
        if batch_idx == 0:
            return {"images": targets[: self.grid_images], "reconstructions": reconstructions[: self.grid_images]}
        return {}

    def on_validation_epoch_end(self) -> None:
        counts = self._reduce_counts(self._val_counts.to(self.device)).cpu()
        sizes = vocabulary_sizes_of(self.vae.quantizer, self.vae.scales)
        first = self.vae.scales.token_counts[0]
        health = codebook_health(counts, sizes, images=int(counts[0].sum()) // first)
        self.codebook_health_report = {"step": int(self.global_step), "split": "validation", **health}
        values: dict[str, float] = {"val/codebook/usage_all": float(health["usage_all"])}  # type: ignore[arg-type]
        for key in ("usage", "usage_of_reachable", "perplexity", "dead"):
            values.update({f"val/codebook/{key}_s{k}": float(v) for k, v in enumerate(health[key])})  # type: ignore[arg-type]
        self.log_dict(values, on_epoch=True)

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["codebook_health"] = {
            "train_usage": self.train_usage.state_dict(),
            "restart_usage": self.restart_usage.state_dict(),
            "pool": [t.detach().cpu() for t in self._pool],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        health = checkpoint.get("codebook_health")
        if not health:
            return
        self.train_usage.load_state_dict(health["train_usage"])
        self.restart_usage.load_state_dict(health["restart_usage"])
        self._pool.clear()
        for tensor in health["pool"]:
            self._pool.append(tensor)
