"""Optional logic of the transformer stage as Lightning callbacks (VAR paper, Sec. 4; reference ``trainer.py``).

* :class:`EMA` — an exponential moving average of the transformer's weights, kept in checkpoints (so resuming
  continues it exactly), swapped in for sample grids and used for the final export.
* :class:`SampleGrid` — periodically samples a class-conditional grid (one row per class), writes it as a PNG
  under the run directory and logs it through every configured logger that takes images (W&B, TensorBoard).
* :class:`Throughput` — tokens/s, samples/s, achieved TFLOP/s and, when the device's peak is given, MFU.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from varkit.lit.periodic import PeriodicCallback, is_rank_zero
from varkit.sampling import SamplingConfig

__all__ = ["EMA", "ClassSampling", "SampleGrid", "Throughput", "find_ema", "sampling_spec"]

logger = logging.getLogger(__name__)


def _transformer(pl_module: L.LightningModule) -> torch.nn.Module:
    return pl_module.model  # type: ignore[return-value]


class EMA(L.Callback):
    """Exponential moving average of the transformer's parameters, updated after every optimiser step.

    Args:
        decay: the averaging factor per optimiser step.
        warmup: use ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early weights fade quickly.
        start_step: first optimiser step at which the average is updated (before it, it copies the weights).
    """

    def __init__(self, decay: float = 0.9999, warmup: bool = True, start_step: int = 0) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.start_step = int(start_step)
        self.shadow: dict[str, Tensor] = {}
        self.updates = 0
        self._last_step = -1

    @property
    def state_key(self) -> str:
        return "EMA"

    def _parameters(self, pl_module: L.LightningModule) -> dict[str, Tensor]:
        from varkit.lit.fsdp import reshard

        model = _transformer(pl_module)
        reshard(model)  # FSDP2: the average follows the shards, never parameters gathered for a forward
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.shadow:
            self.shadow = {n: p.detach().float().clone() for n, p in self._parameters(pl_module).items()}
        else:
            self._adopt(pl_module)
        self._last_step = trainer.global_step

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # strategies that restore checkpoints after set-up (ModelParallelStrategy) load the EMA after on_fit_start
        self._adopt(pl_module)
        self._last_step = trainer.global_step

    def _adopt(self, pl_module: L.LightningModule) -> None:
        """Place the (restored, unsharded) average like the parameters: same device, and under FSDP2 the same
        sharding, so that each rank averages exactly its own shard."""
        from torch.distributed.tensor import DTensor, distribute_tensor

        parameters = self._parameters(pl_module)
        differing = set(parameters) ^ set(self.shadow)
        if differing:
            raise ValueError(f"the restored EMA does not match the model (differing: {sorted(differing)[:5]})")
        for name, parameter in parameters.items():
            average = self.shadow[name]
            if average.shape != parameter.shape:
                raise ValueError(f"the restored EMA of {name} has shape {tuple(average.shape)}, not {parameter.shape}")
            if isinstance(parameter, DTensor) and not isinstance(average, DTensor):
                # every rank restored the whole average: keep this rank's chunk, no communication
                average = distribute_tensor(
                    average.to(parameter.device), parameter.device_mesh, parameter.placements, src_data_rank=None
                )
            self.shadow[name] = average.to(parameter.device)

    def current_decay(self) -> float:
        if self.warmup:
            return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        return self.decay

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step == self._last_step:  # gradient accumulation: no optimiser step yet
            return
        self._last_step = trainer.global_step
        parameters = self._parameters(pl_module)
        if trainer.global_step <= self.start_step:
            for name, parameter in parameters.items():
                self.shadow[name].copy_(parameter.detach())
            return
        decay = self.current_decay()
        for name, parameter in parameters.items():
            self.shadow[name].lerp_(parameter.detach().float(), 1.0 - decay)
        self.updates += 1

    @contextlib.contextmanager
    def swapped(self, pl_module: L.LightningModule) -> Iterator[None]:
        """Temporarily load the EMA weights into the transformer (restored on exit)."""
        parameters = self._parameters(pl_module)
        if not self.shadow:
            yield
            return
        saved = {n: p.detach().clone() for n, p in parameters.items()}
        with torch.no_grad():
            for name, parameter in parameters.items():
                parameter.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, parameter in parameters.items():
                    parameter.copy_(saved[name])

    def full_shadow(self) -> dict[str, Tensor]:
        """The unsharded average on the CPU.

        Under FSDP2 the shards are gathered one tensor at a time (a collective: call it on every rank) and only
        rank 0 keeps them; the other ranks get ``{}``.
        """
        from torch.distributed.tensor import DTensor

        from varkit.lit.fsdp import full_tensor

        rank_zero = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
        averages: dict[str, Tensor] = {}
        for name, tensor in self.shadow.items():
            whole = full_tensor(tensor.detach())
            if rank_zero or not isinstance(tensor, DTensor):
                averages[name] = whole.cpu()
        return averages

    def state_dict(self) -> dict[str, Any]:
        # Lightning writes rank 0's callback states (also into meta.pt of a distributed checkpoint), so the average
        # is stored whole: a checkpoint restores under any strategy and world size
        return {
            "shadow": self.full_shadow(),
            "updates": self.updates,
            "decay": self.decay,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.shadow = {n: t.clone() for n, t in state_dict["shadow"].items()}
        self.updates = int(state_dict["updates"])


def sampling_spec(sampling: SamplingConfig | Mapping[str, Any] | None, legacy: Mapping[str, Any]) -> SamplingConfig:
    """A callback's :class:`SamplingConfig`: ``sampling`` with the old loose keyword arguments (``cfg=``, ...) on
    top; any other keyword is an error naming the accepted ones."""
    allowed = ("cfg", "cfg_schedule", "top_k", "top_p", "temperature", "smooth")
    unknown = sorted(set(legacy) - set(allowed))
    if unknown:
        raise TypeError(f"unexpected argument(s) {', '.join(unknown)}; sampling options go in sampling={{...}}")
    spec = SamplingConfig.from_config(sampling)
    changes = {k: v for k, v in legacy.items() if v is not None}
    return spec.replace(**changes) if changes else spec


def find_ema(trainer: L.Trainer) -> EMA | None:
    """The trainer's :class:`EMA` callback, if any."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, EMA)), None)  # type: ignore[attr-defined]


@torch.inference_mode()
def sample_class_grid(
    pl_module: L.LightningModule,
    classes: Sequence[int],
    per_class: int,
    *,
    seed: int = 0,
    batch_size: int = 64,
    sampling: Any = None,
) -> Tensor:
    """Images ``(len(classes) * per_class, 3, H, W)`` in [0, 1], class-major (one grid row per class);
    ``sampling``: a :class:`varkit.sampling.SamplingConfig` (``None``: the defaults)."""
    from varkit.models.var import sample_images

    model = _transformer(pl_module)
    tokenizer = pl_module.tokenizer  # type: ignore[attr-defined]
    labels = torch.tensor([c for c in classes for _ in range(per_class)], device=pl_module.device)
    generator = torch.Generator(device=pl_module.device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        chunks = [
            sample_images(model, tokenizer, chunk, sampling=sampling, generator=generator)  # type: ignore[arg-type]
            for chunk in labels.split(batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(chunks)


class ClassSampling(PeriodicCallback):
    """A periodic callback that draws ``per_class`` class-conditional samples per class with fixed settings.

    Holds what :class:`SampleGrid` and :class:`~varkit.lit.eval_callback.SampleQuality` share: the classes, the
    sampling options, the seed (the same every time, so successive steps are comparable) and the EMA swap.
    """

    def __init__(
        self,
        every_n_steps: int,
        at_end: bool,
        *,
        classes: Sequence[int] | None,
        max_classes: int,
        per_class: int,
        use_ema: bool,
        sampling: SamplingConfig | Mapping[str, Any] | None,
        seed: int,
        batch_size: int,
        **legacy: Any,
    ) -> None:
        super().__init__(every_n_steps, at_end)
        self.classes = list(classes) if classes is not None else None
        self.max_classes = int(max_classes)
        self.per_class = int(per_class)
        self.use_ema = bool(use_ema)
        self.sampling = sampling_spec(sampling, legacy)
        self.seed = int(seed)
        self.batch_size = int(batch_size)

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[list[int], Tensor, float]:
        """``(classes, images (n, 3, H, W) in [0, 1] class-major, seconds)``, with the EMA weights if asked."""
        num_classes = int(_transformer(pl_module).num_classes)  # type: ignore[arg-type]
        classes = self.classes if self.classes is not None else list(range(min(num_classes, self.max_classes)))
        ema = find_ema(trainer) if self.use_ema else None
        swap = ema.swapped(pl_module) if ema is not None else contextlib.nullcontext()
        started = time.perf_counter()
        with swap:
            images = sample_class_grid(
                pl_module,
                classes,
                self.per_class,
                seed=self.seed,
                batch_size=self.batch_size,
                sampling=self.sampling,
            )
        return classes, images, time.perf_counter() - started


class SampleGrid(ClassSampling):
    """Every ``every_n_steps`` optimiser steps (and at the end), sample one row of ``per_class`` images per class.

    Args:
        every_n_steps: period in optimiser steps (0: only at the end).
        classes: class indices to show (default: every class, up to ``max_classes``).
        per_class: images per class (grid columns).
        use_ema: sample with the EMA weights when an :class:`EMA` callback is present.
        sampling: a :class:`~varkit.sampling.SamplingConfig` or its fields (``conf/sampling/``, composed under
            ``callbacks.sample_grid.sampling``); the old loose ``cfg``, ``cfg_schedule``, ``top_k``, ``top_p``,
            ``temperature`` arguments still override its fields.
        seed: the same seed every time, so grids of successive steps are comparable.
        upscale: nearest-neighbour enlargement of the PNG (small demo images).
        dirname: sub-directory of the run directory receiving ``step0000100.png`` etc.
        at_end: also sample when training ends.
    """

    def __init__(
        self,
        every_n_steps: int = 500,
        classes: Sequence[int] | None = None,
        max_classes: int = 10,
        per_class: int = 8,
        use_ema: bool = True,
        sampling: SamplingConfig | Mapping[str, Any] | None = None,
        seed: int = 0,
        batch_size: int = 64,
        upscale: int = 1,
        dirname: str = "samples",
        at_end: bool = True,
        **legacy: Any,
    ) -> None:
        super().__init__(
            every_n_steps,
            at_end,
            classes=classes,
            max_classes=max_classes,
            per_class=per_class,
            use_ema=use_ema,
            sampling=sampling,
            seed=seed,
            batch_size=batch_size,
            **legacy,
        )
        self.upscale = int(upscale)
        self.dirname = dirname
        self.last_path: Path | None = None

    def sample(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Sample a grid now (also outside the schedule)."""
        self._trigger(trainer, pl_module)

    def run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from varkit.image_io import save_grid, to_uint8

        classes, images, seconds = self.draw(trainer, pl_module)
        if not is_rank_zero():
            return
        pixels = to_uint8(images)
        root = Path(trainer.default_root_dir) / self.dirname
        path = save_grid(
            pixels, root / f"step{trainer.global_step:07d}.png", columns=self.per_class, upscale=self.upscale
        )
        self.last_path = path
        logger.info("sample grid at step %d: %s (%.1f s)", trainer.global_step, path, seconds)
        for experiment_logger in trainer.loggers:
            _log_image(
                experiment_logger,
                "samples/grid",
                path,
                trainer.global_step,
                f"{len(classes)} classes x {self.per_class}",
            )


def _log_image(experiment_logger: Any, key: str, path: Path, step: int, caption: str) -> None:
    """Log an image file through loggers that accept images (W&B, TensorBoard); others only keep the PNG."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    if isinstance(experiment_logger, WandbLogger):
        experiment_logger.log_image(key=key, images=[str(path)], step=step, caption=[caption])
    elif isinstance(experiment_logger, TensorBoardLogger):
        import numpy as np
        from PIL import Image

        picture = np.asarray(Image.open(path).convert("RGB"))
        experiment_logger.experiment.add_image(key, picture, step, dataformats="HWC")


class Throughput(L.Callback):
    """Logs ``throughput/tokens_per_s``, ``samples_per_s``, ``tflops`` (achieved) and ``mfu`` (with ``peak_tflops``).

    The interval between consecutive batch ends is timed (data loading included); tokens count all ranks.

    Args:
        peak_tflops: the device's peak dense throughput in TFLOP/s for the training precision, per device (e.g.
            989 for an H100 in bf16; ~2.2 for this 2-core AMX CPU in bf16). ``None``: no MFU.
    """

    def __init__(self, peak_tflops: float | None = None) -> None:
        self.peak_tflops = peak_tflops
        self._flops_per_sample: float | None = None
        self._last: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from varkit.models.flops import training_flops_per_sample

        self._flops_per_sample = training_flops_per_sample(_transformer(pl_module))  # type: ignore[arg-type]
        self._last = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = None  # the next interval would include validation

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        last, self._last = self._last, now
        if last is None or self._flops_per_sample is None:
            return
        elapsed = max(now - last, 1e-9)
        labels = batch[1]
        samples = int(labels.shape[0]) * trainer.world_size
        tokens = samples * _transformer(pl_module).scales.total_tokens  # type: ignore[union-attr]
        tflops = samples * self._flops_per_sample / elapsed / 1e12
        metrics = {
            "throughput/tokens_per_s": tokens / elapsed,
            "throughput/samples_per_s": samples / elapsed,
            "throughput/tflops": tflops,
        }
        if self.peak_tflops:
            metrics["throughput/mfu"] = tflops / (self.peak_tflops * trainer.world_size)
        pl_module.log_dict(metrics, on_step=True, on_epoch=False)
