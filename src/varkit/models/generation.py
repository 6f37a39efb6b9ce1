"""The pieces of VAR's coarse-to-fine sampler that speed-ups and editing plug into (VAR paper, Sec. 3.2, Alg. 2).

:meth:`varkit.models.var.VAR.generate` runs one transformer pass per scale over a KV cache. What may change that
loop is expressed here, in plain torch, so that the transformer does not know any particular method:

* :class:`Speedup` — the hook points of a training-free speed-up (:mod:`varkit.sampling.speedups` registers the
  built-in ones): plan the run once (guidance weights per scale, last scale, which model runs which scale, KV
  cache sizes), replace the block stack of a scale (token pruning), act after a scale (KV-cache eviction).
* :class:`EditConstraint` — zero-shot editing (VAR Sec. 4.4): per scale, source tokens that are teacher-forced
  where a mask says so.
* :class:`ModelRunner` — one transformer's per-call state (adaLN modulations, KV caches, positions), so a sampler
  can hand later scales to a second model with the same tokenizer (draft / refine). It runs each block through
  :class:`_InferenceBlock`: the block's own math with everything that is constant for the call (adaLN ``1 + scale``,
  the fused QKV bias, the attention temperature) computed once and the elementwise steps fused (gated residuals as
  one ``addcmul``, the QK normalisation and temperature as one multiply), its four matrix multiplications (and the
  head's) through :class:`varkit.nn.cpu_linear.InferenceLinear`: oneDNN on a CPU, the same float32 products about
  twice as fast as the default BLAS on the AMD box measured (``benchmarks/speedups.py``). A block with forward
  hooks or wrapped projections (LoRA) runs its own ``forward`` instead, so hooks fire and adapters apply.

Every hook is a no-op by default: a :class:`Speedup` that plans nothing leaves the exact sampler bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varkit.nn.attention import MAX_LOG_SCALE, KVCache
from varkit.nn.block import AdaLNBlock
from varkit.nn.cpu_linear import InferenceLinear, Linear
from varkit.nn.mlp import MLP

if TYPE_CHECKING:
    from varkit.contracts import Scales
    from varkit.models.var import VAR

__all__ = ["EditConstraint", "GenerationPlan", "ModelRunner", "Speedup"]

CacheFactory = Callable[[int, int, int, int, torch.dtype, torch.device], KVCache]


def _default_cache(
    rows: int, heads: int, capacity: int, head_dim: int, dtype: torch.dtype, device: torch.device
) -> KVCache:
    return KVCache(rows, heads, capacity, head_dim, dtype=dtype, device=device)


@dataclass
class GenerationPlan:
    """What one sampling call will do; :meth:`Speedup.plan` may change it before the first scale.

    ``weights[k]``: the guidance weight ``t_k`` of scale k (``(1 + t) cond - t uncond``); once every remaining
    weight is 0 the unconditional rows are dropped. ``last_scale``: sampling stops after it and the latent
    accumulated so far is returned. ``models[k]``: the transformer that predicts scale k (default: the one
    called). ``cache_capacity``/``make_cache``: size and type of each layer's KV cache.
    """

    weights: list[float]
    last_scale: int
    models: list[VAR]
    scales: Scales
    batch: int
    cache_capacity: int
    make_cache: CacheFactory = _default_cache

    @property
    def guided(self) -> bool:
        return any(w != 0.0 for w in self.weights[: self.last_scale + 1])

    def guided_from(self, k: int) -> bool:
        """Whether any scale from ``k`` to the last one still uses the unconditional branch."""
        return any(w != 0.0 for w in self.weights[k : self.last_scale + 1])


class Speedup:
    """Base of training-free sampling speed-ups; override only the hooks a method needs.

    Instances are built from a config by :data:`varkit.registry.SAMPLERS` and must be stateless between calls
    (state of one call lives in :meth:`plan`'s arguments or is reset there), so one object serves many calls.
    """

    #: True when a sample does not depend on the other samples of its batch (checked by the conformance kit)
    batch_independent: bool = True

    def plan(self, plan: GenerationPlan) -> None:
        """Adjust the plan of one call (guidance weights, last scale, models, cache) before sampling starts."""

    def before_scale(self, k: int, runner: ModelRunner) -> None:
        """Called before scale ``k`` runs (every speed-up, in order)."""

    def run_blocks(self, k: int, x: Tensor, runner: ModelRunner) -> Tensor | None:
        """Replace the block stack for scale ``k``: return the final hidden states ``(rows, n_k, width)``, or
        ``None`` to run every block on every token (the exact computation). The first speed-up that returns
        hidden states wins."""
        return None

    def after_scale(self, k: int, runner: ModelRunner) -> None:
        """Called after scale ``k``'s tokens were sampled (e.g. to evict KV-cache entries)."""

    def __repr__(self) -> str:
        fields = getattr(self, "__dataclass_fields__", {})
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in fields)
        return f"{type(self).__name__}({args})"


@dataclass
class EditConstraint:
    """Zero-shot editing: per scale, ``tokens[k]`` ``(b, h_k*w_k)`` int64 and ``masks[k]`` bool of the same shape;
    where the mask is True the source token replaces the sampled one, so later scales condition on it."""

    tokens: Sequence[Tensor]
    masks: Sequence[Tensor]

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.masks):
            raise ValueError(
                f"an edit constraint needs as many masks as token maps ({len(self.tokens)} tokens, "
                f"{len(self.masks)} masks)"
            )

    def check(self, num_scales: int, batch: int) -> None:
        if len(self.tokens) != num_scales:
            raise ValueError(f"editing needs tokens and masks for all {num_scales} scales, got {len(self.tokens)}")
        for k, (tokens, mask) in enumerate(zip(self.tokens, self.masks)):
            if tokens.shape[0] != batch or mask.shape != tokens.shape:
                raise ValueError(
                    f"edit constraint at scale {k}: tokens {tuple(tokens.shape)} and mask {tuple(mask.shape)} must "
                    f"both be ({batch}, tokens of the scale)"
                )

    def keep(self, k: int, device: torch.device) -> Tensor:
        return self.masks[k].to(device)

    def apply(self, k: int, indices: Tensor) -> Tensor:
        """The sampled ``indices`` of scale ``k`` with the kept positions replaced by the source tokens."""
        return torch.where(self.keep(k, indices.device), self.tokens[k].to(indices.device), indices)


#: linears the fused inference path may read the weights of directly (anything else runs its own forward)
_PLAIN_LINEARS = (nn.Linear, Linear)


class _InferenceBlock:
    """One :class:`~varkit.nn.block.AdaLNBlock` evaluated for KV-cached sampling with per-call constants folded in.

    Same computation as ``block(x, modulation, cache=cache)`` in eval mode (dropout and drop-path are identities
    there), up to floating-point rounding of the fused steps.
    """

    def __init__(self, block: AdaLNBlock, modulation: Tensor) -> None:
        attention = block.attention
        self.block, self.attention = block, attention
        self.eps = block.norm_eps
        self.heads, self.head_dim, self.width = attention.num_heads, attention.head_dim, attention.width
        # the four GEMMs, through oneDNN on a CPU (varkit.nn.cpu_linear); the fused QKV bias is built once per call
        self.qkv = InferenceLinear(attention.qkv.weight, attention.qkv_bias())
        self.proj = InferenceLinear(attention.proj.weight, attention.proj.bias)
        mlp = block.mlp
        self.fc1 = InferenceLinear(mlp.fc1.weight, mlp.fc1.bias, activation="gelu_tanh")
        self.fc2 = InferenceLinear(mlp.fc2.weight, mlp.fc2.bias)
        self.scale = attention.softmax_scale
        self.qk_factor: Tensor | None = None
        if attention.qk_l2_norm:
            # queries are multiplied by the learned per-head temperature, keys by 1: one factor for both
            temperature = attention.log_scale.clamp(max=MAX_LOG_SCALE).exp().view(1, 1, 1, self.heads, 1)
            factor = torch.cat((temperature, torch.ones_like(temperature)), dim=2)
            self.qk_factor = factor.to(attention.qkv.weight.dtype)
        self.set_modulation(modulation)

    def set_modulation(self, modulation: Tensor) -> None:
        gamma1, gamma2, scale1, scale2, shift1, shift2 = modulation.unbind(2)
        self.gamma1, self.gamma2, self.shift1, self.shift2 = gamma1, gamma2, shift1, shift2
        self.scale1, self.scale2 = scale1 + 1.0, scale2 + 1.0

    @staticmethod
    def supports(block: nn.Module) -> bool:
        """Only plain blocks without hooks: a wrapped projection (e.g. a LoRA adapter) runs through its own forward."""
        if type(block) is not AdaLNBlock:
            return False
        attention, mlp = block.attention, block.mlp
        linears = (attention.qkv, attention.proj, getattr(mlp, "fc1", None), getattr(mlp, "fc2", None))
        if type(mlp) is not MLP or not all(type(m) in _PLAIN_LINEARS for m in linears) or block.training:
            return False
        # forward hooks the user registered (e.g. to inspect activations) must fire: those run the module itself
        modules = (block, attention, *linears, mlp)
        return not any(m._forward_hooks or m._forward_pre_hooks for m in modules)  # type: ignore[union-attr]

    def __call__(self, x: Tensor, cache: KVCache) -> Tensor:
        b, n, width = x.shape
        h = torch.addcmul(self.shift1, F.layer_norm(x, (width,), eps=self.eps), self.scale1)
        qkv = self.qkv(h).view(b, n, 3, self.heads, self.head_dim)
        v = qkv[:, :, 2].transpose(1, 2)
        if self.qk_factor is not None:
            qk = qkv[:, :, :2]
            norms = torch.linalg.vector_norm(qk, dim=-1, keepdim=True).clamp_min_(1e-12)
            qk = qk * (self.qk_factor / norms).to(v.dtype)
        else:
            qk = qkv[:, :, :2]
        q, k = qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2)
        k, v = cache.append(k, v)
        cache.observe(q, self.scale)
        out = self.attention.kernel(q, k, v, scale=self.scale)
        out = self.proj(out.transpose(1, 2).reshape(b, n, width))
        x = torch.addcmul(x, out, self.gamma1)
        h = torch.addcmul(self.shift2, F.layer_norm(x, (width,), eps=self.eps), self.scale2)
        return torch.addcmul(x, self.fc2(self.fc1(h)), self.gamma2)


@dataclass
class ModelRunner:
    """One transformer's state for one sampling call: conditions, adaLN modulations, KV caches, positions.

    ``rows`` is ``2 b`` while guidance is on (conditional rows first) and ``b`` afterwards. ``last_hidden`` holds
    the final hidden states of the latest scale (before the head), for speed-ups that reuse them.
    """

    model: VAR
    labels: Tensor
    guided: bool
    plan: GenerationPlan
    caches: list[KVCache] = field(init=False)
    stats: dict[str, Any] = field(default_factory=dict)
    last_hidden: Tensor | None = None

    def __post_init__(self) -> None:
        model, batch = self.model, self.labels.shape[0]
        self.batch = batch
        self.rows = 2 * batch if self.guided else batch
        null = torch.full_like(self.labels, model.num_classes)
        cond_labels = torch.cat((self.labels, null)) if self.guided else self.labels
        self.cond = model.class_embedding(cond_labels)
        # The condition is fixed for the whole call: compute every adaLN modulation once, not once per scale.
        self.modulations = model.block_modulations(self.cond)
        self.head_modulation = model.head_norm.modulation(self.cond)
        self.positions = model.position_embedding()
        # under autocast the keys/values come out in the autocast dtype, not the weights' dtype
        device_type = model.device.type
        autocast = torch.is_autocast_enabled(device_type)
        cache_dtype = torch.get_autocast_dtype(device_type) if autocast else model.dtype
        head_dim = model.width // model.num_heads
        self.caches = [
            self.plan.make_cache(
                self.rows, model.num_heads, self.plan.cache_capacity, head_dim, cache_dtype, model.device
            )
            for _ in model.blocks
        ]
        # a plain linear head runs through oneDNN too; a wrapped or hooked one through its own forward
        head = model.head
        plain_head = type(head) in _PLAIN_LINEARS and not (head._forward_hooks or head._forward_pre_hooks)
        self._head = InferenceLinear(head.weight, head.bias) if plain_head else head
        fused = all(_InferenceBlock.supports(block) for block in model.blocks)
        self.fused = (
            [_InferenceBlock(block, m) for block, m in zip(model.blocks, self.modulations)]  # type: ignore[arg-type]
            if fused
            else None
        )

    @property
    def blocks(self) -> Sequence[Any]:
        return self.model.blocks  # type: ignore[return-value]

    def drop_unconditional(self) -> None:
        """Keep only the conditional rows from now on (guidance is off for every remaining scale)."""
        if self.rows == self.batch:
            return
        self.rows = self.batch
        self.cond = self.cond[: self.batch]
        self.modulations = [m[: self.batch] for m in self.modulations]
        self.head_modulation = self.head_modulation[: self.batch]
        for cache in self.caches:
            cache.keep_rows(self.batch)
        for step, modulation in zip(self.fused or (), self.modulations):
            step.set_modulation(modulation)

    def first_input(self) -> Tensor:
        """Input of scale 1: class embedding + start tokens + positions, ``(rows, first_tokens, width)``."""
        model = self.model
        first = model.scales.first_tokens
        return self.cond[:, None] + model.start_tokens.expand(self.rows, -1, -1) + self.positions[:, :first]

    def embed(self, k: int, following: Tensor) -> Tensor:
        """Input of scale ``k`` from the quantizer's next-scale input ``(b, n_k, code_dim)``."""
        model = self.model
        x = model.word_embedding(following.to(model.dtype)) + self.positions[:, model.scales.slice(k)]
        return torch.cat((x, x)) if self.rows != self.batch else x

    def run_blocks(self, x: Tensor, start: int = 0, stop: int | None = None) -> Tensor:
        """Blocks ``start .. stop - 1`` with KV caching (every block when no range is given)."""
        stop = len(self.blocks) if stop is None else stop
        if self.fused is not None:
            for index in range(start, stop):
                x = self.fused[index](x, self.caches[index])
            return x
        for index in range(start, stop):
            x = self.blocks[index](x, self.modulations[index], cache=self.caches[index])
        return x

    def head(self, x: Tensor) -> Tensor:
        h = self.model.head_norm(x, modulation=self.head_modulation)
        return self._head(h).float()

    def cache_bytes(self) -> int:
        """Bytes allocated for keys and values over all layers (the buffers, also after rows were dropped)."""
        return sum(c.keys.untyped_storage().nbytes() + c.values.untyped_storage().nbytes() for c in self.caches)
