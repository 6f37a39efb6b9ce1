"""In-training sample quality: a small-budget FID / IS (optionally KID, precision/recall) every N steps.

The VAR paper tracks FID and IS of the transformer stage (Tian et al. 2024, §5); full 50k-sample evaluations are
for ``varkit eval``. This callback samples ``per_class`` images for a fixed set of validation classes with the same
seed each time (so successive figures are comparable), measures them against reference statistics computed once
from validation shards (or read from a reference ``.npz``), and logs ``eval/fid``, ``eval/inception_score``, ... to
every logger. With few samples FID is biased upwards: compare values across steps, not with the literature.

Add it to a training config, e.g. ``conf/callbacks/<yours>.yaml``::

    fid:
      _target_: varkit.lit.eval_callback.SampleQuality
      reference: ${paths.data_dir}/demo/val
      every_n_steps: 500
      per_class: 20
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L

from varkit.lit.periodic import is_rank_zero
from varkit.lit.var_callbacks import ClassSampling

__all__ = ["SampleQuality"]

logger = logging.getLogger(__name__)


class SampleQuality(ClassSampling):
    """Every ``every_n_steps`` optimiser steps (and at the end), log FID/IS of freshly generated samples.

    Args:
        reference: image shards (directory, brace pattern, list) or a reference ``.npz``.
        evaluator: feature-extractor spec (``{"name": "tiny"}`` or ``{"name": "inception_fid", "weights": ...}``).
        every_n_steps: period in optimiser steps (0: only at the end).
        classes: classes to sample (default: every class, up to ``max_classes``).
        per_class: samples per class.
        max_reference_images: cap on reference images read from shards.
        cache_dir: where reference statistics are cached (``None``: not cached).
        use_ema: sample with the EMA weights when an EMA callback is present.
        sampling: a :class:`~varkit.sampling.SamplingConfig` or its fields (old loose ``cfg=`` etc. still override).
        kid, precision_recall: also compute these (they need reference features; cheap at small budgets).
        seed, batch_size, at_end: as in :class:`varkit.lit.var_callbacks.SampleGrid`.
    """

    def __init__(
        self,
        reference: str | Sequence[str],
        evaluator: Mapping[str, Any] | None = None,
        every_n_steps: int = 1000,
        classes: Sequence[int] | None = None,
        max_classes: int = 10,
        per_class: int = 10,
        max_reference_images: int | None = None,
        cache_dir: str | None = None,
        use_ema: bool = True,
        sampling: Mapping[str, Any] | Any = None,
        kid: bool = False,
        precision_recall: bool = False,
        seed: int = 0,
        batch_size: int = 64,
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
        self.reference_spec = reference if isinstance(reference, str) else list(reference)
        self.evaluator_spec = dict(evaluator) if evaluator is not None else {"name": "tiny"}
        self.max_reference_images = max_reference_images
        self.cache_dir = cache_dir
        self.kid = bool(kid)
        self.precision_recall = bool(precision_recall)
        self.last_metrics: dict[str, Any] | None = None
        self._extractor: Any = None
        self._reference: Any = None

    def run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _, images, generation_seconds = self.draw(trainer, pl_module)
        if is_rank_zero():  # under FSDP2 every rank samples (see PeriodicCallback); rank 0 scores and logs
            self._score(trainer, pl_module, images, generation_seconds)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Evaluate now (also outside the schedule)."""
        self._trigger(trainer, pl_module)

    def _reference_for(self, image_size: int, device: str) -> Any:
        from varkit.data.shards import expand_urls
        from varkit.evaluation.stats import reference_from_npz, reference_from_shards

        if self._reference is None:
            spec = self.reference_spec
            if isinstance(spec, str) and spec.endswith(".npz"):
                self._reference = reference_from_npz(spec, self._extractor, batch_size=self.batch_size, device=device)
            else:
                urls = [u for u in expand_urls(spec) if Path(u).is_file()]
                self._reference = reference_from_shards(
                    urls,
                    self._extractor,
                    image_size=image_size,
                    cache_dir=self.cache_dir,
                    max_images=self.max_reference_images,
                    batch_size=self.batch_size,
                    device=device,
                )
        return self._reference

    def _score(self, trainer: L.Trainer, pl_module: L.LightningModule, images: Any, generation_seconds: float) -> None:
        from varkit.evaluation.extractors import build_extractor
        from varkit.evaluation.runner import MetricSettings, evaluate_images
        from varkit.evaluation.samples import to_uint8_nhwc

        scoring_started = time.perf_counter()
        device = str(pl_module.device)
        if self._extractor is None:
            self._extractor = build_extractor(dict(self.evaluator_spec)).to(device)
        pixels = to_uint8_nhwc(images)
        reference = self._reference_for(pixels.shape[1], device)
        settings = MetricSettings(
            inception_score_splits=min(10, len(pixels)),
            kid_subset_size=min(1000, len(pixels)),
            kid=self.kid,
            precision_recall=self.precision_recall,
            seed=self.seed,
        )
        result = evaluate_images(
            pixels, self._extractor, reference, settings, batch_size=self.batch_size, device=device
        )
        metrics = {"eval/fid": result["fid"], "eval/seconds_per_image": generation_seconds / len(pixels)}
        # None where the extractor cannot give it (IS without a classifier head, sFID without spatial features)
        for key in ("inception_score", "sfid", "kid", "precision", "recall"):
            if result[key] is not None:
                metrics[f"eval/{key}"] = result[key]
        self.last_metrics = metrics
        for experiment_logger in trainer.loggers:
            experiment_logger.log_metrics(metrics, step=trainer.global_step)
        logger.info(
            "step %d: FID %.3f, IS %s on %d samples (%.1f s)",
            trainer.global_step,
            result["fid"],
            "—" if result["inception_score"] is None else f"{result['inception_score']:.2f}",
            len(pixels),
            generation_seconds + time.perf_counter() - scoring_started,
        )
