"""Built-in training-free sampling speed-ups, registered in :data:`varkit.registry.SAMPLERS`.

Each is off unless named in ``sampling.speedups`` and composes with the others (they act on different hook points
of :class:`varkit.models.generation.Speedup`). Scale and block indices are 0-based; negative ones count from the
end (``-1`` = the finest scale / the last block), so one setting fits every depth and schedule.

* ``token_pruning`` — FastVAR (Guo et al., 2025, Sec. 3.2 "pivotal token selection" / "cached token
  restoration"): at the largest scales, from one block on, only the tokens farthest from the scale's mean token
  go through the remaining blocks; the pruned positions take the previous scale's final hidden states, upsampled.
* ``guidance_cutoff`` — Switti (Voronov et al., 2024, Sec. 4.3): no classifier-free guidance from one scale on,
  so the unconditional rows are dropped there (half the rows).
* ``kv_budget`` — ScaleKV / HACK-style KV-cache compression: from one scale on, each layer keeps at most
  ``budget`` cached positions per head, the ones the current scale's queries attend to most.
* ``draft_refine`` — CoDe (Chen et al., 2024): a large model drafts the coarse scales, a smaller one with the same
  tokenizer refines the rest (after filling its cache with the drafted coarse scales).
* ``early_stop`` — SkipVAR-style static early exit: stop after a scale and decode the latent accumulated so far.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from varkit.models.generation import GenerationPlan, ModelRunner, Speedup
from varkit.nn.attention import KVCache
from varkit.registry import SAMPLERS

if TYPE_CHECKING:
    from varkit.models.var import VAR

__all__ = ["BudgetKVCache", "DraftRefine", "EarlyStop", "GuidanceCutoff", "KVBudget", "TokenPruning"]


def _index(value: int, count: int, what: str) -> int:
    index = value + count if value < 0 else value
    if not 0 <= index < count:
        raise ValueError(f"{what} {value} is outside the {count} available (0..{count - 1}, or -{count}..-1)")
    return index


@SAMPLERS.register("token_pruning")
@dataclass
class TokenPruning(Speedup):
    """FastVAR token pruning: at the largest scales, later blocks run only on the tokens farthest from the mean.

    Args:
        scales: the scales to prune (default: the two finest).
        from_block: the first block that sees only the kept tokens (earlier blocks run on all of them); past the
            model's depth it means the last block.
        ratio: the fraction of tokens pruned (0: off).
        fill: what pruned positions hold after the last block: ``previous`` (the previous scale's final hidden
            states, upsampled: FastVAR's cached token restoration) or ``input`` (their input to ``from_block``).
    """

    scales: Sequence[int] = (-2, -1)
    from_block: int = 4
    ratio: float = 0.5
    fill: str = "previous"
    OFF: ClassVar[dict[str, Any]] = {"ratio": 0.0}

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"token_pruning ratio must be in [0, 1), got {self.ratio}")
        if self.fill not in ("previous", "input"):
            raise ValueError(f"token_pruning fill must be previous or input, got {self.fill!r}")
        self.scales = tuple(int(s) for s in self.scales)

    def run_blocks(self, k: int, x: Tensor, runner: ModelRunner) -> Tensor | None:
        num_scales, depth = runner.model.scales.num_scales, len(runner.blocks)
        if self.ratio == 0.0 or k not in {_index(s, num_scales, "token_pruning scale") for s in self.scales}:
            return None
        # a model shallower than from_block still prunes its last block (one setting serves every depth)
        start = depth - 1 if self.from_block >= depth else _index(self.from_block, depth, "token_pruning from_block")
        x = runner.run_blocks(x, 0, start)
        rows, length, width = x.shape
        keep = max(1, round(length * (1.0 - self.ratio)))
        # pivotal tokens: far from the scale's mean token; chosen on the conditional rows, shared with the
        # unconditional half so that guidance mixes logits of the same computation
        distance = (x[: runner.batch] - x[: runner.batch].mean(dim=1, keepdim=True)).norm(dim=-1)
        chosen = distance.topk(keep, dim=1).indices.sort(dim=1).values
        if rows != runner.batch:
            chosen = torch.cat((chosen, chosen))
        gather = chosen[..., None].expand(-1, -1, width)
        kept = runner.run_blocks(x.gather(1, gather), start)
        runner.stats["pruned_tokens"] = runner.stats.get("pruned_tokens", 0) + (length - keep) * (depth - start)
        previous = runner.last_hidden
        if self.fill == "previous" and previous is not None and k > 0:
            (h_prev, w_prev), (h, w) = runner.model.scales.sizes[k - 1], runner.model.scales.sizes[k]
            grid = previous[:rows].transpose(1, 2).reshape(rows, width, h_prev, w_prev)
            base = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
            base = base.flatten(2).transpose(1, 2).to(kept.dtype)
        else:
            base = x
        return base.scatter(1, gather, kept)


@SAMPLERS.register("guidance_cutoff")
@dataclass
class GuidanceCutoff(Speedup):
    """Switti's guidance cut-off: no classifier-free guidance from scale ``from_scale`` on (half the rows there).

    Args:
        from_scale: the first scale sampled without guidance (default: the finest); ``None``: off.
    """

    from_scale: int | None = -1
    OFF: ClassVar[dict[str, Any]] = {"from_scale": None}

    def plan(self, plan: GenerationPlan) -> None:
        if self.from_scale is None:
            return
        first = _index(self.from_scale, len(plan.weights), "guidance_cutoff from_scale")
        for k in range(first, len(plan.weights)):
            plan.weights[k] = 0.0


class BudgetKVCache(KVCache):
    """A KV cache that, once :attr:`active`, keeps at most ``budget`` positions per (row, head) on :meth:`evict`.

    Importance is the mean attention probability the latest queries gave each cached position (a strided sample
    of at most ``queries`` queries per head, so measuring costs little next to the attention itself).
    """

    def __init__(self, *args: Any, budget: int, queries: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.budget, self.queries = int(budget), int(queries)
        self.importance: Tensor | None = None
        self.active = False
        self.peak = 0

    def keep_rows(self, rows: int) -> None:
        super().keep_rows(rows)
        if self.importance is not None:
            self.importance = self.importance[:rows]

    def append(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        out = super().append(keys, values)
        self.peak = max(self.peak, self.length)
        return out

    def observe(self, queries: Tensor, scale: float) -> None:
        if not self.active:
            return
        step = max(1, queries.shape[2] // self.queries)
        sample = queries[:, :, ::step]
        keys = self.keys[:, :, : self.length]
        probs = (sample @ keys.transpose(-1, -2)).float().mul_(scale).softmax(dim=-1)
        self.importance = probs.mean(dim=2)  # (rows, heads, length)

    def evict(self) -> None:
        if self.length <= self.budget or self.importance is None:
            return
        keep = self.importance.topk(self.budget, dim=-1).indices.sort(dim=-1).values
        index = keep[..., None].expand(-1, -1, -1, self.keys.shape[-1])
        kept_keys = self.keys[:, :, : self.length].gather(2, index)
        kept_values = self.values[:, :, : self.length].gather(2, index)
        self.keys[:, :, : self.budget].copy_(kept_keys)
        self.values[:, :, : self.budget].copy_(kept_values)
        self.length = self.budget
        self.importance = None


@SAMPLERS.register("kv_budget")
@dataclass
class KVBudget(Speedup):
    """ScaleKV/HACK-style KV-cache budget: from ``from_scale`` on, each layer keeps ``budget`` positions per head.

    Args:
        budget: cached positions kept per layer and head after each scale from ``from_scale`` on; ``None``: off.
        from_scale: the first scale after which the cache is trimmed (its queries rank the positions).
        queries: queries per head sampled to rank the cached positions.
    """

    budget: int | None = 128
    from_scale: int = -4
    queries: int = 64
    OFF: ClassVar[dict[str, Any]] = {"budget": None}

    def __post_init__(self) -> None:
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"kv_budget budget must be a positive number of positions, got {self.budget}")

    def _first(self, num_scales: int) -> int:
        return _index(self.from_scale, num_scales, "kv_budget from_scale")

    def plan(self, plan: GenerationPlan) -> None:
        if self.budget is None:
            return
        first, budget = self._first(plan.scales.num_scales), self.budget
        # the most positions any layer ever holds: everything up to the first trimmed scale, then budget + n_k
        length = capacity = 0
        for k, count in enumerate(plan.scales.token_counts[: plan.last_scale + 1]):
            length += count
            capacity = max(capacity, length)
            if k >= first:
                length = min(length, budget)
        plan.cache_capacity = min(plan.cache_capacity, capacity)
        queries = self.queries

        def make_cache(
            rows: int, heads: int, capacity: int, head_dim: int, dtype: torch.dtype, device: torch.device
        ) -> KVCache:
            return BudgetKVCache(
                rows, heads, capacity, head_dim, dtype=dtype, device=device, budget=budget, queries=queries
            )

        plan.make_cache = make_cache

    def before_scale(self, k: int, runner: ModelRunner) -> None:
        if self.budget is not None:
            active = k >= self._first(runner.model.scales.num_scales)
            for cache in runner.caches:
                if isinstance(cache, BudgetKVCache):
                    cache.active = active

    def after_scale(self, k: int, runner: ModelRunner) -> None:
        if self.budget is None or k < self._first(runner.model.scales.num_scales):
            return
        for cache in runner.caches:
            if isinstance(cache, BudgetKVCache):
                cache.evict()
                runner.stats["kv_cache_peak_positions"] = max(
                    runner.stats.get("kv_cache_peak_positions", 0), cache.peak
                )


@SAMPLERS.register("draft_refine")
@dataclass
class DraftRefine(Speedup):
    """CoDe-style draft and refine: the model called drafts scales ``< switch_scale``, ``model`` refines the rest.

    Args:
        model: the refining transformer: a generator directory (``varkit train`` output or ``varkit convert``'s
            ``var/``) or a :class:`~varkit.models.var.VAR`; it must share the tokenizer (scales, codebook).
        switch_scale: the first scale the refiner predicts (default: the finest two); ``None``: off.
    """

    model: Any = None
    switch_scale: int | None = -2
    OFF: ClassVar[dict[str, Any]] = {"switch_scale": None}
    _loaded: Any = field(default=None, init=False, repr=False)

    def _refiner(self, like: VAR) -> VAR:
        if self._loaded is None:
            refiner = self.model
            if isinstance(refiner, (str, Path)):
                from varkit.checkpoint.generator import load_generator

                refiner, _, _ = load_generator(Path(refiner), device=like.device)
            if refiner is None or not hasattr(refiner, "generate"):
                raise ValueError("draft_refine needs model=<generator directory or VAR> (the smaller refiner)")
            for key in ("codebook_size", "code_dim", "num_classes"):
                if getattr(refiner, key) != getattr(like, key):
                    raise ValueError(
                        f"draft_refine: the refiner's {key} {getattr(refiner, key)} differs from "
                        f"the drafter's {getattr(like, key)}; both must share tokenizer and classes"
                    )
            if refiner.scales.sizes != like.scales.sizes:
                raise ValueError("draft_refine: the refiner uses another scale schedule than the drafter")
            self._loaded = refiner.to(device=like.device, dtype=like.dtype).eval()
        return self._loaded

    def plan(self, plan: GenerationPlan) -> None:
        if self.switch_scale is None:
            return
        first = _index(self.switch_scale, len(plan.models), "draft_refine switch_scale")
        refiner = self._refiner(plan.models[0])
        for k in range(first, len(plan.models)):
            plan.models[k] = refiner


@SAMPLERS.register("early_stop")
@dataclass
class EarlyStop(Speedup):
    """Static early exit (SkipVAR-style): stop after scale ``scale`` and decode the latent accumulated so far.

    Args:
        scale: the last scale sampled (default: the second finest); ``None``: off.
    """

    scale: int | None = -2
    OFF: ClassVar[dict[str, Any]] = {"scale": None}

    def plan(self, plan: GenerationPlan) -> None:
        if self.scale is not None:
            plan.last_scale = min(plan.last_scale, _index(self.scale, len(plan.weights), "early_stop scale"))
