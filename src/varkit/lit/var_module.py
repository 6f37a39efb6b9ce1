"""``VARModule``: the Lightning system of the transformer stage (VAR paper, Sec. 3.2 and Sec. 4 "Training").

A thin shell over the plain :class:`~varkit.models.var.VAR` transformer: it turns a batch into token targets and
teacher-forcing inputs through a frozen tokenizer, computes the cross-entropy over all scales (optionally with
label smoothing and progressive growth over scales, as in the reference's ``pg`` option), logs per-scale loss
and accuracy, and owns the optimiser (AdamW with no decay on norms/biases/embeddings) and its schedule.

The loss itself is a registered training objective (:mod:`varkit.objectives`: ``next_scale_ce`` by default, ``cca``
for guidance-free post-training). An objective that needs a frozen reference model gets one: built here (from
its ``reference`` directory, or a copy of the initial weights), frozen, and — like the tokenizer — not a registered
sub-module, so it is outside the optimiser, the EMA, the checkpoint's state dict and the DDP/FSDP2 wrapping
(each rank holds it whole); a resumed run rebuilds it from the same source.

Batches are ``(inputs, labels)`` where ``inputs`` is either

* token indices — flat ``(b, L)`` int64 or a per-scale list ``[(b, h_k * w_k), ...]`` (pre-tokenized shards,
  :class:`varkit.data.TokenDataModule`), or
* images ``(b, 3, H, W)`` in ``[-1, 1]`` (:class:`varkit.data.WebDataModule`), tokenized on the fly.

The tokenizer is not a registered sub-module: checkpoints hold the transformer only, and the tokenizer is
reloaded from its own directory. EMA, sample grids and throughput live in :mod:`varkit.lit.var_callbacks`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor

from varkit.contracts import Scales
from varkit.lit.fsdp import full_tensor
from varkit.lit.settings import (
    ProgressiveSettings,
    VARLossSettings,
    VAROptimSettings,
    parse_settings,
    settings_dict,
)
from varkit.models.var import VAR
from varkit.models.vqvae import VQVAE
from varkit.objectives.base import Objective, ObjectiveBatch
from varkit.training.optim import (
    ScheduleSpec,
    build_adamw,
    lr_factor,
    param_groups,
    scaled_learning_rate,
    weight_decay_at,
)

__all__ = ["DEFAULT_OBJECTIVE", "VARModule"]

logger = logging.getLogger(__name__)

#: the training objective (a registered :data:`varkit.registry.OBJECTIVES` name and its arguments)
DEFAULT_OBJECTIVE: dict[str, Any] = {"name": "next_scale_ce"}


class VARModule(L.LightningModule):
    """Lightning system training a :class:`VAR` on a frozen tokenizer's token maps.

    Args:
        model: :class:`VAR` constructor arguments (a ``model=`` config node; ``scales``, ``codebook_size`` and
            ``code_dim`` must already come from the tokenizer — see :func:`varkit.models.factory.model_arguments`).
        optim: optimiser/schedule options (:class:`~varkit.lit.settings.VAROptimSettings`).
        loss: :class:`~varkit.lit.settings.VARLossSettings` (``label_smoothing``).
        progressive: progressive training over scales (:class:`~varkit.lit.settings.ProgressiveSettings`).
        compile: ``torch.compile`` the transformer's training forward (``True`` or compile keyword arguments).
        seed: base seed of this module's own randomness (class dropout), mixed with the rank.
        tokenizer: the frozen VQ-VAE (not saved in checkpoints; pass it again when loading for training).
        tokenizer_path: where the tokenizer was loaded from (recorded in the hyper-parameters).
        finetune: what trains (:data:`varkit.training.finetune.DEFAULT_VAR_FINETUNE`: frozen blocks/embeddings,
            LoRA adapters); frozen parameters stay out of the optimiser and the EMA.
        initialize: called with the freshly built transformer before ``finetune`` is applied (e.g.
            :func:`varkit.checkpoint.init.initialize_from`); not saved in the hyper-parameters.
        objective: the training objective, ``{name: ..., **arguments}`` (:data:`DEFAULT_OBJECTIVE`).
    """

    def __init__(
        self,
        model: Mapping[str, Any],
        optim: Mapping[str, Any] | None = None,
        loss: Mapping[str, Any] | None = None,
        progressive: Mapping[str, Any] | None = None,
        compile: bool | Mapping[str, Any] = False,
        seed: int = 0,
        tokenizer: VQVAE | None = None,
        tokenizer_path: str | None = None,
        finetune: Mapping[str, Any] | None = None,
        initialize: Callable[[VAR], Any] | None = None,
        objective: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        model_args = {str(k): v for k, v in dict(model).items()}
        optim_args = settings_dict(parse_settings(VAROptimSettings, optim, "optim"))
        loss_args = settings_dict(parse_settings(VARLossSettings, loss, "loss"))
        progressive_args = settings_dict(parse_settings(ProgressiveSettings, progressive, "progressive"))
        compile_args: bool | dict[str, Any] = dict(compile) if isinstance(compile, Mapping) else bool(compile)
        objective_args = {str(k): v for k, v in dict(objective or DEFAULT_OBJECTIVE).items()}
        # plain containers only: checkpoints must load with torch.load(weights_only=True)
        self.save_hyperparameters(
            {
                "model": model_args,
                "optim": optim_args,
                "loss": loss_args,
                "progressive": progressive_args,
                "compile": compile_args,
                "seed": int(seed),
                "tokenizer_path": tokenizer_path,
                "finetune": dict(finetune or {}),
                "objective": objective_args,
            }
        )
        self.model = VAR.from_config(model_args)
        # The frozen tokenizer, the objective's frozen reference model and the (possibly compiled) training forward
        # stay outside the module tree on purpose: checkpoints hold the transformer only (the tokenizer is reloaded
        # from its own directory, the reference rebuilt from its source), and neither Lightning nor FSDP may move,
        # cast, shard or train them. nn.Module registers Module attributes, not a dict.
        self._unregistered: dict[str, Any] = {"tokenizer": None, "train_forward": self.model, "reference": None}
        if initialize is not None:
            initialize(self.model)  # before LoRA: the checkpoint holds the plain weights
        # after the starting weights (the reference of a post-training objective is a copy of them), before LoRA
        self.objective = self._build_objective(objective_args)
        if finetune:
            from varkit.training.finetune import apply_var_finetune

            # here, not in configure_model: a resumed run must have the adapters before its state is restored
            apply_var_finetune(self.model, finetune)
        self.scales: Scales = self.model.scales
        if tokenizer is not None:
            self.set_tokenizer(tokenizer)
        self._generator: torch.Generator | None = None
        self._pending_rng: dict[str, Any] | None = None
        bounds = self.scales.offsets
        self._scale_bounds = [(bounds[k], bounds[k + 1]) for k in range(self.scales.num_scales)]

    # -- settings: typed views of the hyper-parameters (the checkpoint's source of truth) ---------------------------
    @property
    def optim_settings(self) -> VAROptimSettings:
        return parse_settings(VAROptimSettings, self.hparams["optim"], "optim")

    @property
    def loss_settings(self) -> VARLossSettings:
        return parse_settings(VARLossSettings, self.hparams["loss"], "loss")

    @property
    def progressive_settings(self) -> ProgressiveSettings:
        return parse_settings(ProgressiveSettings, self.hparams["progressive"], "progressive")

    # -- set-up ---------------------------------------------------------------------------------------------------
    def _build_objective(self, spec: Mapping[str, Any]) -> Objective:
        """The registered objective, and its frozen reference model when it needs one."""
        from varkit.registry import OBJECTIVES

        objective: Objective = OBJECTIVES.build(dict(spec))
        if self.model.bits is not None and not objective.supports_bitwise:
            raise ValueError(
                f"objective {objective.describe()} needs per-token softmax likelihoods; this transformer has a "
                "bit-wise head (msbsq tokenizer)"
            )
        if not objective.uses_class_dropout and self.model.class_dropout > 0:
            logger.info("objective %s: the transformer's class dropout is off", objective.describe())
            self.model.class_dropout = 0.0
        if objective.needs_reference:
            from varkit.checkpoint.starting import load_reference

            self._unregistered["reference"] = load_reference(objective.reference, self.model)
            logger.info(
                "objective %s: frozen reference model from %s",
                objective.describe(),
                objective.reference or "the initial weights",
            )
        return objective

    @property
    def reference(self) -> VAR | None:
        """The objective's frozen reference transformer (``None`` when the objective needs none)."""
        reference: VAR | None = self._unregistered["reference"]
        return reference

    def _check_tokenizer(self, tokenizer: VQVAE) -> None:
        quantizer = tokenizer.quantizer
        if tokenizer.scales != self.scales:
            raise ValueError(f"the transformer's scales {self.scales.describe()} differ from the tokenizer's")
        if int(quantizer.codebook_size) != self.model.codebook_size or int(quantizer.code_dim) != self.model.code_dim:
            raise ValueError("the transformer's codebook_size/code_dim differ from the tokenizer's")

    def set_tokenizer(self, tokenizer: VQVAE) -> None:
        """Attach the frozen tokenizer (e.g. after ``load_from_checkpoint``)."""
        self._check_tokenizer(tokenizer)
        self._unregistered["tokenizer"] = tokenizer

    @property
    def tokenizer(self) -> VQVAE | None:
        """The frozen VQ-VAE (not a registered sub-module: see ``__init__``); set with :meth:`set_tokenizer`."""
        return self._unregistered["tokenizer"]

    def _frozen_tokenizer(self) -> VQVAE:
        tokenizer = self.tokenizer
        if tokenizer is None:
            raise RuntimeError("VARModule needs its frozen tokenizer: pass tokenizer= or call set_tokenizer()")
        return tokenizer

    def configure_model(self) -> None:
        """Shard the transformer when the strategy provides a device mesh (FSDP2), then compile it if asked.

        Lightning may call this more than once; both steps are applied once.
        """
        mesh = self.device_mesh
        if mesh is not None:
            self._shard(mesh)
        compile_args = self.hparams["compile"]
        if compile_args and self._unregistered["train_forward"] is self.model:
            options = compile_args if isinstance(compile_args, dict) else {}
            # compiled separately so that the state-dict keys stay ``model.*`` (no ``_orig_mod.`` prefix)
            self._unregistered["train_forward"] = torch.compile(self.model, **options)

    def _shard(self, mesh: Any) -> None:
        """FSDP2 over the data-parallel dimension of ``mesh`` (``ModelParallelStrategy``/``FSDP2Strategy``)."""
        from varkit.lit.fsdp import is_sharded, local_numel, shard_transformer

        if is_sharded(self.model):
            return
        names = mesh.mesh_dim_names or ()
        if "tensor_parallel" in names and mesh["tensor_parallel"].size() > 1:
            raise ValueError(
                "VAR has no tensor-parallel plan: use tensor_parallel_size=1 (FSDP2 over all ranks, trainer=fsdp)"
            )
        data_mesh = mesh["data_parallel"] if "data_parallel" in names else mesh
        blocks = shard_transformer(self.model, data_mesh, str(self._trainer.precision if self._trainer else "32"))
        local, total = local_numel(self.model)
        logger.info(
            "FSDP2: sharded %d blocks over %d ranks; rank %d holds %d of %d parameter elements",
            blocks,
            data_mesh.size(),
            data_mesh.get_local_rank(),
            local,
            total,
        )

    def on_fit_start(self) -> None:
        self._frozen_tokenizer().to(self.device)
        if self.reference is not None:
            self.reference.to(self.device)

    def _class_dropout_generator(self) -> torch.Generator:
        if self._generator is None or self._generator.device != self.device:
            from varkit.rng import mix_seed

            generator = torch.Generator(device=self.device)
            generator.manual_seed(mix_seed(self.hparams["seed"], self.global_rank, 7))  # per-rank stream
            if self._pending_rng is not None and "class_dropout" in self._pending_rng:
                generator.set_state(self._pending_rng["class_dropout"].cpu())
            self._generator = generator
        return self._generator

    # -- batches --------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def token_maps(self, inputs: Tensor | Sequence[Tensor]) -> list[Tensor]:
        """Per-scale token indices ``[(b, h_k * w_k), ...]`` from tokens (flat or per scale) or images."""
        if isinstance(inputs, (list, tuple)):
            return [t.long() for t in inputs]
        if inputs.is_floating_point():
            tokenizer = self._frozen_tokenizer()
            with torch.autocast(device_type=inputs.device.type, enabled=False):
                return list(tokenizer.tokenize(inputs.float(), self.scales))
        if inputs.shape[1] != self.scales.total_tokens:
            raise ValueError(
                f"token batch has {inputs.shape[1]} tokens per sample, scales need {self.scales.total_tokens}"
            )
        return list(inputs.long().split(list(self.scales.token_counts), dim=1))

    @torch.no_grad()
    def teacher_forcing(self, indices: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """``(targets (b, L), transformer inputs (b, L - first, code_dim))`` from per-scale indices."""
        quantizer = self._frozen_tokenizer().quantizer
        with torch.autocast(device_type=indices[0].device.type, enabled=False):
            inputs = quantizer.teacher_forcing_inputs(list(indices), self.scales)
        return torch.cat(list(indices), dim=1), inputs

    # -- progressive training -------------------------------------------------------------------------------------
    def progressive_stage(self, step: int) -> int:
        """Index of the finest scale trained at ``step`` (the reference's ``prog_si``); ``K - 1`` when off.

        During warm-up the stage is ``start_scale``; it then grows linearly to the last scale at
        ``fraction * total_steps``.
        """
        options = self.progressive_settings
        last = self.scales.num_scales - 1
        if options.fraction <= 0:
            return last
        total = self._total_steps()
        warmup = self._warmup_steps(total)
        start = min(int(options.start_scale), last)
        end_step = options.fraction * total
        if step <= warmup:
            return start
        if step >= end_step:
            return last
        progress = min(max((step - warmup) / max(end_step - warmup, 1), 0.0), 1.0)
        return start + round(progress * (last - start))

    def _stage_warmup_weight(self, stage: int, step: int) -> float:
        warmup = self.progressive_settings.scale_warmup_steps
        if warmup <= 0 or stage == self.progressive_stage(0) or stage == self.scales.num_scales - 1:
            return 1.0
        first = step
        while first > 0 and self.progressive_stage(first - 1) == stage:
            first -= 1
        return min(max((step - first + 1) / warmup, 0.01), 1.0)

    # -- steps ----------------------------------------------------------------------------------------------------
    def forward(self, labels: Tensor, inputs: Tensor) -> Tensor:
        """Teacher-forced logits (see :meth:`VAR.forward`)."""
        return self.model(labels, inputs)

    def training_step(self, batch: tuple[Any, Tensor], batch_idx: int) -> Tensor:
        if self._pending_rng is not None:  # first step after a resume: continue the random streams exactly
            if "torch" in self._pending_rng:
                torch.set_rng_state(self._pending_rng["torch"].cpu())  # global RNG (drop path)
            self._generator = None
            self._class_dropout_generator()
            self._pending_rng = None
        inputs, labels = batch
        targets, tf_inputs = self.teacher_forcing(self.token_maps(inputs))
        stage = self.progressive_stage(self.global_step)
        end = self._scale_bounds[stage][1]
        targets = targets[:, :end]
        tf_inputs = tf_inputs[:, : end - self.scales.first_tokens]
        generator = self._class_dropout_generator()
        train_forward = self._unregistered["train_forward"]
        weights = torch.full((end,), 1.0 / self.scales.total_tokens, device=targets.device)
        if stage < self.scales.num_scales - 1:
            begin = self._scale_bounds[stage][0]
            weights[begin:end] *= self._stage_warmup_weight(stage, self.global_step)
            self.log("train/progressive_stage", float(stage), on_step=True)
        batch_view = ObjectiveBatch(
            labels=labels,
            targets=targets,
            inputs=tf_inputs,
            token_weights=weights,
            null_class=self.model.num_classes,
            label_smoothing=float(self.loss_settings.label_smoothing),
            token_loss=self.model.token_loss,
            generator=generator,
        )
        reference = self.reference
        if reference is not None:
            reference.train(self.model.training)  # same dropout/drop-path regime as the policy (CCA reference code)
        output = self.objective(
            lambda classes, inputs: train_forward(classes, inputs, generator=generator), batch_view, reference
        )
        self.log("train/loss", output.loss, on_step=True, prog_bar=True)
        for name, value in output.metrics.items():
            self.log(f"train/{name}", value, on_step=True)
        self._log_scale_metrics("train", output.logits.detach(), targets, output.per_token)
        return output.loss

    def validation_step(self, batch: tuple[Any, Tensor], batch_idx: int) -> None:
        inputs, labels = batch
        targets, tf_inputs = self.teacher_forcing(self.token_maps(inputs))
        logits = self.model(labels, tf_inputs)
        self._log_scale_metrics("val", logits, targets, None, sync_dist=True, per_scale=True)

    @torch.no_grad()
    def _log_scale_metrics(
        self,
        split: str,
        logits: Tensor,
        targets: Tensor,
        per_token: Tensor | None,
        *,
        sync_dist: bool = False,
        per_scale: bool = True,
    ) -> None:
        """Cross-entropy and accuracy (%), mean over all tokens and over the last scale, and per scale."""
        if per_token is None:
            per_token = self.model.token_loss(logits.float(), targets)
        correct = (self.model.predict_tokens(logits) == targets).float() * 100.0
        on_step = split == "train"
        options = {"on_step": on_step, "on_epoch": not on_step, "sync_dist": sync_dist}
        self.log(f"{split}/ce", per_token.mean(), **options)
        self.log(f"{split}/acc", correct.mean(), prog_bar=split == "train", **options)
        length = targets.shape[1]
        if length == self.scales.total_tokens:
            last = self._scale_bounds[-1][0]
            self.log(f"{split}/ce_last", per_token[:, last:].mean(), **options)
            self.log(f"{split}/acc_last", correct[:, last:].mean(), **options)
        if per_scale:
            for k, (begin, end) in enumerate(self._scale_bounds):
                if end > length:
                    break
                self.log(f"{split}/ce_s{k}", per_token[:, begin:end].mean(), **options)
                self.log(f"{split}/acc_s{k}", correct[:, begin:end].mean(), **options)

    # -- optimisation ---------------------------------------------------------------------------------------------
    def _total_steps(self) -> int:
        total = self.optim_settings.total_steps
        if total is None:
            total = self.trainer.max_steps if self._trainer is not None else -1
        if total is None or int(total) <= 0:
            raise ValueError("the schedule needs a step count: set trainer.max_steps (or optim.total_steps)")
        return int(total)

    def _warmup_steps(self, total: int) -> int:
        options = self.optim_settings
        if options.warmup_steps is not None:
            return int(options.warmup_steps)
        return round(float(options.warmup_fraction) * total)

    def learning_rate(self) -> float:
        """Peak learning rate: ``optim.lr``, or ``base_lr * global_batch / reference_batch``."""
        options = self.optim_settings
        if options.lr is not None:
            return float(options.lr)
        batch = options.batch_size
        if batch is None:
            raise ValueError("optim.batch_size (the per-device batch) is needed to scale the learning rate")
        trainer = self.trainer
        global_batch = int(batch) * trainer.world_size * int(trainer.accumulate_grad_batches)
        logger.info(
            "global batch %d = %d per device x %d devices x %d accumulated",
            global_batch,
            int(batch),
            trainer.world_size,
            int(trainer.accumulate_grad_batches),
        )
        return scaled_learning_rate(float(options.base_lr), global_batch, int(options.reference_batch))

    def configure_optimizers(self) -> dict[str, Any]:
        options = self.optim_settings
        total = self._total_steps()
        spec = ScheduleSpec(
            total_steps=total,
            warmup_steps=min(self._warmup_steps(total), total),
            kind=str(options.schedule),
            warmup_start=float(options.warmup_start),
            final_ratio=float(options.final_ratio),
        )
        peak = self.learning_rate()
        logger.info(
            "peak learning rate %.3g, %s schedule over %d steps (%d warm-up)", peak, spec.kind, total, spec.warmup_steps
        )
        groups = param_groups(self.model, float(options.weight_decay))
        optimizer = build_adamw(groups, peak, options.betas, float(options.eps), options.fused)

        def factor(step: int) -> float:  # a plain function: LambdaLR then stores nothing for it in checkpoints
            return lr_factor(step, spec)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        options = self.optim_settings
        start = float(options.weight_decay)
        end = start if options.weight_decay_end is None else float(options.weight_decay_end)
        decay = weight_decay_at(self.global_step, self._total_steps(), start, end)
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["weight_decay"] = decay * group.get("weight_decay_scale", 1.0)
            self.log("train/lr", optimizer.param_groups[0]["lr"], on_step=True)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the global gradient norm to ``optim.grad_clip`` (or the trainer's value; <= 0: off); log the norm."""
        limit = gradient_clip_val if gradient_clip_val is not None else self.optim_settings.grad_clip
        if limit is None or float(limit) <= 0:
            return  # no clipping: skip the norm computation too
        parameters = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(parameters, float(limit))
        self.log("train/grad_norm", full_tensor(norm), on_step=True)  # a DTensor under FSDP2

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store every rank's random streams (drop path, class dropout): ranks draw different numbers."""
        states: dict[str, Any] = {"torch": torch.get_rng_state()}
        if self._generator is not None:
            states["class_dropout"] = self._generator.get_state()
        ranks: list[Any] = [states]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Lightning builds the checkpoint dict on every rank and writes rank 0's: collect the others' streams
            ranks = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(ranks, states)
        checkpoint["varkit_rng"] = {"ranks": ranks}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = dict(checkpoint.get("varkit_rng", {}))
        ranks = saved.get("ranks", [saved] if saved else [])
        world = self.trainer.world_size if self._trainer is not None else 1
        rank = self.global_rank
        if ranks and len(ranks) != world:
            logger.warning(
                "checkpoint holds the random streams of %d ranks, this run has %d: each rank starts a fresh stream "
                "from its per-rank seed (the resumed run is not bitwise the uninterrupted one)",
                len(ranks),
                world,
            )
            ranks = []
        self._pending_rng = dict(ranks[rank]) if ranks else None
        self._generator = None
