"""The VAR transformer: class-conditional next-scale prediction (Tian et al., NeurIPS 2024, Sec. 3.2 and 4).

A GPT-2-like decoder over the flattened token maps ``r_1 .. r_K`` of a multi-scale tokenizer. The tokens of scale k
are predicted all at once from the class, the start tokens and the (embedded) accumulated latent of scales < k,
under a block-causal mask. Conditioning enters through adaptive layer norm (DiT-style) in every block and before
the head.

* :meth:`VAR.forward` — teacher forcing: ``(labels, inputs of scales 2..K) -> logits of all L tokens``.
* :meth:`VAR.generate` — scale-by-scale sampling with a pre-allocated KV cache and classifier-free guidance;
  the quantizer (any :class:`~varkit.contracts.MultiScaleQuantizer`) is passed in, the transformer does not own
  it. It returns tokens and the accumulated latent; :func:`sample_images` also decodes them with a VQ-VAE.

The transformer computes in the dtype of its weights: ``model.to(torch.bfloat16)`` gives bf16 inference without
autocast re-casting the weights at every call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from varkit.contracts import BlockCausalMask, GuidanceSchedule, MultiScaleQuantizer, Scales
from varkit.models.generation import EditConstraint, GenerationPlan, ModelRunner, Speedup
from varkit.models.sampling import (
    filter_logits,
    guided_logits,
    gumbel_softmax,
    sample_bits,
    sample_tokens,
    smooth_temperature,
)
from varkit.nn.adaln import AdaLNModulation, HeadAdaLN, SharedAdaLN
from varkit.nn.attention import KernelSpec
from varkit.nn.block import AdaLNBlock
from varkit.nn.cpu_linear import Linear
from varkit.nn.embeddings import ScalePositionEmbedding
from varkit.nn.heads import (
    bitwise_loss,
    bitwise_predictions,
    mask_vocabulary,
    token_vocabularies,
    vocabulary_cross_entropy,
)
from varkit.registry import ATTENTION_KERNELS, CFG_SCHEDULES, SCALE_SCHEDULES

__all__ = ["VAR", "GenerationOutput", "sample_images"]

ScalesSpec = Scales | Sequence[int | Sequence[int]] | str | Mapping[str, Any]
CfgScheduleSpec = str | Mapping[str, Any] | GuidanceSchedule | Callable[[int, int, float], float]


def _kernel_spec_as_data(spec: KernelSpec) -> str | dict[str, Any]:
    """Plain-data form of a kernel spec for configs (a kernel object is recorded by its registry name).

    A kernel object without a ``name`` cannot be written down: recording some other kernel's name would rebuild a
    different model from the saved config, so it is an error rather than a guess.
    """
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        return dict(spec)
    name = getattr(spec, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"attention kernel {type(spec).__name__} has no registry name (a 'name' attribute), so the model config "
            "could not record it; pass a registered name or a {'name': ...} spec instead"
        )
    return name


@dataclass
class GenerationOutput:
    """What :meth:`VAR.generate` returns.

    ``tokens[k]``: ``(b, h_k * w_k)`` int64 tokens of scale k; ``latent``: ``(b, code_dim, H, W)`` float32, the
    latent accumulated over all scales (what the VQ-VAE decoder turns into an image); ``stats``: what the call
    cost (``kv_cache_bytes``, ``scales_run``, and figures speed-ups add).
    """

    tokens: list[Tensor]
    latent: Tensor
    stats: dict[str, Any] = field(default_factory=dict)


class LatentDecoder(Protocol):
    """Anything that maps an accumulated latent to images in [-1, 1] (e.g. varkit's VQ-VAE)."""

    def decode_latents(self, latents: Tensor) -> Tensor: ...


class VAR(nn.Module):
    """Visual autoregressive transformer over a multi-scale token pyramid.

    Args:
        num_classes: number of class labels; row ``num_classes`` of the class embedding is the null class used
            for classifier-free guidance and class dropout.
        depth, width, num_heads, mlp_ratio: transformer shape (``width`` is the embedding dimension).
        dropout: dropout after the attention projection and the MLP; attention_dropout: on attention weights.
        drop_path: the stochastic-depth rate of the last block (linearly increasing from 0 over the blocks).
        norm_eps: layer-norm epsilon.
        shared_adaln: one adaLN projection for all blocks plus a per-block learned offset (VAR-d36).
        qk_l2_norm: cosine attention with a learned per-head temperature.
        class_dropout: probability of replacing a label by the null class in training (enables CFG).
        codebook_size, code_dim: the tokenizer's vocabulary size and code-vector dimension.
        codebook_sizes: per-scale vocabularies (scale k predicts among codes ``[0, codebook_sizes[k])``; the others'
            logits are masked); None: ``codebook_size`` at every scale.
        bits: bit-wise head (:mod:`varkit.nn.heads`): predict ``bits`` independent bit logits per token instead of
            ``codebook_size`` logits (for BSQ tokenizers, ``codebook_size = 2^bits``); None: softmax head.
        scales: the token-map schedule (a :class:`Scales`, a list of sizes or a registered schedule name).
        attention: the attention kernel (registry name or spec mapping, see :data:`varkit.ATTENTION_KERNELS`).
    """

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        depth: int = 16,
        width: int = 1024,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        shared_adaln: bool = False,
        qk_l2_norm: bool = True,
        class_dropout: float = 0.1,
        codebook_size: int = 4096,
        code_dim: int = 32,
        scales: ScalesSpec = "var_256",
        attention: KernelSpec = "sdpa",
        codebook_sizes: Sequence[int] | None = None,
        bits: int | None = None,
    ) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} must be divisible by num_heads {num_heads}")
        if not 0.0 <= class_dropout < 1.0:
            raise ValueError(f"class_dropout must be in [0, 1), got {class_dropout}")
        self.scales = SCALE_SCHEDULES.resolve(scales)
        self.num_classes, self.depth, self.width, self.num_heads = num_classes, depth, width, num_heads
        self.codebook_size, self.code_dim = codebook_size, code_dim
        self.bits = None if bits is None else int(bits)
        if self.bits is not None and 2**self.bits != codebook_size:
            raise ValueError(
                f"a bit-wise head with {self.bits} bits needs codebook_size 2^{self.bits}, got {codebook_size}"
            )
        self.codebook_sizes = None if codebook_sizes is None else [int(v) for v in codebook_sizes]
        if self.codebook_sizes is not None and (
            len(self.codebook_sizes) != len(self.scales) or max(self.codebook_sizes) > codebook_size
        ):
            raise ValueError(f"codebook_sizes {self.codebook_sizes} must give one size <= {codebook_size} per scale")
        if self.codebook_sizes is not None and self.bits is not None:
            raise ValueError("per-scale vocabularies and the bit-wise head do not combine")
        self.class_dropout = float(class_dropout)
        self.mask = BlockCausalMask(self.scales)
        self.config: dict[str, Any] = {
            "num_classes": num_classes,
            "depth": depth,
            "width": width,
            "num_heads": num_heads,
            "mlp_ratio": float(mlp_ratio),
            "dropout": float(dropout),
            "attention_dropout": float(attention_dropout),
            "drop_path": float(drop_path),
            "norm_eps": float(norm_eps),
            "shared_adaln": bool(shared_adaln),
            "qk_l2_norm": bool(qk_l2_norm),
            "class_dropout": float(class_dropout),
            "codebook_size": codebook_size,
            "code_dim": code_dim,
            "scales": self.scales.as_list(),
            "attention": _kernel_spec_as_data(attention),
        }
        # only when used, so that the config (and the released checkpoints' parity) of plain models is unchanged
        if self.codebook_sizes is not None:
            self.config["codebook_sizes"] = list(self.codebook_sizes)
        if self.bits is not None:
            self.config["bits"] = self.bits

        std = math.sqrt(1.0 / width / 3.0)
        self.class_embedding = nn.Embedding(num_classes + 1, width)
        self.start_tokens = nn.Parameter(torch.empty(1, self.scales.first_tokens, width))
        nn.init.trunc_normal_(self.start_tokens, mean=0.0, std=std)
        self.word_embedding = nn.Linear(code_dim, width)
        self.position_embedding = ScalePositionEmbedding(self.scales, width, init_std=std)

        self.shared_adaln = SharedAdaLN(width, width) if shared_adaln else None
        kernel = ATTENTION_KERNELS.resolve(attention)  # one stateless kernel object shared by all blocks
        rates = torch.linspace(0.0, drop_path, depth).tolist() if depth > 1 else [0.0]
        self.blocks = nn.ModuleList(
            AdaLNBlock(
                width,
                num_heads,
                width,
                mlp_ratio=mlp_ratio,
                dropout=dropout,
                attention_dropout=attention_dropout,
                drop_path=rate,
                norm_eps=norm_eps,
                shared_adaln=shared_adaln,
                qk_l2_norm=qk_l2_norm,
                attention=kernel,
            )
            for rate in rates
        )
        self.head_norm = HeadAdaLN(width, width, norm_eps)
        self.head = Linear(width, codebook_size if self.bits is None else self.bits)
        self.token_vocabularies: Tensor | None
        if self.codebook_sizes is not None:
            vocabularies = token_vocabularies(self.codebook_sizes, self.scales.token_counts)
            self.register_buffer("token_vocabularies", vocabularies, persistent=False)
        else:
            self.token_vocabularies = None
        self.init_weights()

    # -- initialisation -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(
        self,
        init_adaln: float = 0.5,
        init_adaln_gamma: float = 1e-5,
        init_head: float = 0.02,
        init_std: float | None = None,
    ) -> None:
        """The reference initialisation (VAR's ``init_weights``).

        Linear and embedding weights ~ truncated normal(``init_std``, default ``sqrt(1 / (3 width))``), biases 0;
        the head scaled by ``init_head``; adaLN scale/shift rows by ``init_adaln`` and gate rows by
        ``init_adaln_gamma`` (each block starts close to the identity); the residual output projections (attention
        ``proj``, MLP ``fc2``) divided by ``sqrt(2 depth)`` as in GPT-2.
        """
        std = math.sqrt(1.0 / self.width / 3.0) if init_std is None else init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=std)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                nn.init.trunc_normal_(module.weight, std=std)
        self.head.weight.mul_(init_head)
        self.head.bias.zero_()
        self.head_norm.linear.weight.mul_(init_adaln)
        self.head_norm.linear.bias.zero_()
        width, depth = self.width, len(self.blocks)
        for block in self.blocks:
            assert isinstance(block, AdaLNBlock)
            block.attention.proj.weight.div_(math.sqrt(2 * depth))
            block.mlp.fc2.weight.div_(math.sqrt(2 * depth))
            adaln: AdaLNModulation = block.adaln
            if adaln.shared:
                adaln.block_offset[:, :, 2:].mul_(init_adaln)
                adaln.block_offset[:, :, :2].mul_(init_adaln_gamma)
            else:
                adaln.linear.weight[2 * width :].mul_(init_adaln)
                adaln.linear.weight[: 2 * width].mul_(init_adaln_gamma)
                adaln.linear.bias.zero_()

    # -- shared pieces --------------------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def block_modulations(self, cond: Tensor) -> list[Tensor]:
        """Each block's six adaLN vectors ``(b, 1, 6, width)`` for class embeddings ``cond`` ``(b, width)``."""
        source = self.shared_adaln(cond) if self.shared_adaln is not None else cond
        return [block.adaln(source) for block in self.blocks]  # type: ignore[operator]

    def drop_labels(self, labels: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Class dropout: each label becomes the null class with probability ``class_dropout``."""
        if self.class_dropout <= 0.0:
            return labels
        draws = torch.rand(labels.shape, device=labels.device, generator=generator)
        return torch.where(draws < self.class_dropout, torch.full_like(labels, self.num_classes), labels)

    # -- the head's view of tokens --------------------------------------------------------------------------------
    @property
    def bitwise(self) -> bool:
        """True when the head predicts bits (:mod:`varkit.nn.heads`) rather than a softmax over the vocabulary."""
        return self.bits is not None

    def _mask(self, logits: Tensor, positions: slice) -> Tensor:
        if self.token_vocabularies is None:
            return logits
        return mask_vocabulary(logits, self.token_vocabularies[positions])

    def token_loss(self, logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
        """Per-token loss ``(b, L)`` of :meth:`forward`'s logits: cross-entropy, or the sum of per-bit BCEs."""
        if self.bits is not None:
            return bitwise_loss(logits, targets)
        return vocabulary_cross_entropy(logits, targets, label_smoothing)

    def predict_tokens(self, logits: Tensor) -> Tensor:
        """The most likely token ids ``(b, L)`` of :meth:`forward`'s logits."""
        return bitwise_predictions(logits) if self.bits is not None else logits.argmax(dim=-1)

    # -- teacher forcing ------------------------------------------------------------------------------------------
    def forward(self, labels: Tensor, inputs: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Teacher-forced logits ``(b, L, codebook_size)`` float32 (``(b, L, bits)`` for a bit-wise head).

        Args:
            labels: ``(b,)`` class indices (``num_classes`` = null class). Class dropout applies in training.
            inputs: ``(b, L - h_1*w_1, code_dim)`` inputs of scales 2..K, i.e.
                :meth:`MultiScaleQuantizer.teacher_forcing_inputs`. A prefix covering only the first scales is
                accepted too; the logits then cover the same prefix.
            generator: randomness of class dropout.
        """
        if self.training:
            labels = self.drop_labels(labels, generator=generator)
        cond = self.class_embedding(labels)
        batch, first = labels.shape[0], self.scales.first_tokens
        length = first + inputs.shape[1]
        if length > self.scales.total_tokens:
            raise ValueError(
                f"teacher-forcing inputs have {inputs.shape[1]} tokens; scales {self.scales.describe()} allow at most "
                f"{self.scales.total_tokens - first}"
            )
        start = cond[:, None] + self.start_tokens.expand(batch, -1, -1)
        x = torch.cat((start, self.word_embedding(inputs.to(self.word_embedding.weight.dtype))), dim=1)
        x = x + self.position_embedding()[:, :length]
        for block, modulation in zip(self.blocks, self.block_modulations(cond)):
            x = block(x, modulation, mask=self.mask)
        return self._mask(self.head(self.head_norm(x, cond)).float(), slice(0, length))

    # -- sampling -------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self,
        labels: Tensor,
        quantizer: MultiScaleQuantizer,
        *,
        cfg: float = 1.5,
        cfg_schedule: CfgScheduleSpec = "linear",
        top_k: int = 0,
        top_p: float = 0.0,
        temperature: float = 1.0,
        smooth: bool = False,
        generator: torch.Generator | None = None,
        constraint: EditConstraint | None = None,
        speedups: Sequence[Speedup] = (),
    ) -> GenerationOutput:
        """Sample token maps coarse to fine (VAR Algorithm 2), one transformer pass per scale with a KV cache.

        Args:
            labels: ``(b,)`` class indices; ``num_classes`` samples unconditionally.
            quantizer: the tokenizer's quantizer; provides code vectors (``lookup``) and each next input
                (``next_scale_input``).
            cfg: nominal guidance scale; ``cfg_schedule`` (a registered name of :data:`varkit.CFG_SCHEDULES`, a
                spec mapping or a callable ``(k, K, cfg) -> t_k``) gives the weight ``t_k`` of each scale, mixing
                ``(1 + t_k) * cond - t_k * uncond``. Once every remaining ``t_k`` is 0 the unconditional half is
                dropped (from the start when all are 0).
            top_k, top_p, temperature: the usual filters (``top_k=1`` is greedy).
            smooth: the reference's "more smooth" visualisation mode: the next input is built from a Gumbel-softmax
                mixture of code vectors instead of the sampled codes (tokens are still sampled).
            generator: the only source of randomness.
            constraint: zero-shot editing (VAR Sec. 4.4, :class:`~varkit.models.generation.EditConstraint`): per
                scale, source tokens teacher-forced where its mask is True.
            speedups: training-free speed-ups (:class:`~varkit.models.generation.Speedup`, usually built from
                :data:`varkit.registry.SAMPLERS` by :class:`varkit.sampling.SamplingConfig`); none = exact.

        Nothing is stored on the module: the caches live for one call. ``GenerationOutput.stats`` reports the KV
        cache bytes allocated and the scales run.
        """
        scales, num_scales = self.scales, self.scales.num_scales
        if smooth and self.bits is not None:
            raise ValueError("smooth=True mixes all code vectors; a bit-wise head has 2^bits of them: use smooth=False")
        schedule = CFG_SCHEDULES.resolve(cfg_schedule)
        labels = labels.to(self.device)
        batch = labels.shape[0]
        if constraint is not None:
            constraint.check(num_scales, batch)
        plan = GenerationPlan(
            weights=[float(schedule(k, num_scales, cfg)) for k in range(num_scales)],
            last_scale=num_scales - 1,
            models=[self] * num_scales,
            scales=scales,
            batch=batch,
            cache_capacity=scales.total_tokens,
        )
        for speedup in speedups:
            speedup.plan(plan)
        last = plan.last_scale
        if not 0 <= last < num_scales:
            raise ValueError(f"a speed-up planned to stop after scale {last}; scales are 0..{num_scales - 1}")
        codebook = quantizer.lookup(torch.arange(self.codebook_size, device=self.device)[None])[0] if smooth else None

        runners: dict[int, ModelRunner] = {}
        inputs: list[Tensor] = []  # the quantizer's next-scale inputs, for a model that takes over mid-way
        accumulated = torch.zeros(batch, self.code_dim, *scales.last, device=self.device)
        tokens: list[Tensor] = []
        runner: ModelRunner | None = None
        x: Tensor | None = None
        for k in range(last + 1):
            height, width = scales.sizes[k]
            model = plan.models[k]
            if runner is None or model is not runner.model:
                runner = self._runner_for(model, labels, plan, runners, inputs, k)
                x = runner.first_input() if k == 0 else runner.embed(k, inputs[k - 1])
            assert x is not None
            if not plan.guided_from(k) and runner.rows != batch:
                runner.drop_unconditional()
                x = x[:batch]
            for speedup in speedups:
                speedup.before_scale(k, runner)
            hidden = None
            for speedup in speedups:
                hidden = speedup.run_blocks(k, x, runner)
                if hidden is not None:
                    break
            if hidden is None:
                hidden = runner.run_blocks(x)
            runner.last_hidden = hidden
            logits = runner.head(hidden)
            if runner.rows != batch:  # per bit on bit logits: (1 + t) cond - t uncond is elementwise
                logits = guided_logits(logits[:batch], logits[batch:], plan.weights[k])
            logits = self._mask(logits, scales.slice(k))  # after guidance: -inf - (-inf) would be nan
            if self.bits is not None:
                indices = sample_bits(logits, top_k=top_k, top_p=top_p, temperature=temperature, generator=generator)
            else:
                indices = sample_tokens(logits, top_k=top_k, top_p=top_p, temperature=temperature, generator=generator)
            if constraint is not None:
                indices = constraint.apply(k, indices)
            tokens.append(indices)
            if codebook is not None:
                progress = k / (num_scales - 1) if num_scales > 1 else 1.0
                filtered = filter_logits(logits, top_k=top_k, top_p=top_p, temperature=temperature)
                soft = gumbel_softmax(filtered * (1.0 + progress), smooth_temperature(progress), generator=generator)
                codes = soft @ codebook
                if constraint is not None:
                    codes = torch.where(constraint.keep(k, codes.device)[..., None], quantizer.lookup(indices), codes)
            else:
                codes = quantizer.lookup(indices)
            code_map = codes.transpose(1, 2).reshape(batch, self.code_dim, height, width)
            accumulated, following = quantizer.next_scale_input(k, accumulated, code_map, scales)
            for speedup in speedups:
                speedup.after_scale(k, runner)
            if k < last:
                following = following.flatten(2).transpose(1, 2)
                inputs.append(following)
                if plan.models[k + 1] is runner.model:
                    x = runner.embed(k + 1, following)
        stats = {
            "scales_run": last + 1,
            "kv_cache_bytes": sum(r.cache_bytes() for r in runners.values()),
            **{key: value for r in runners.values() for key, value in r.stats.items()},
        }
        return GenerationOutput(tokens=tokens, latent=accumulated, stats=stats)

    @staticmethod
    def _runner_for(
        model: VAR,
        labels: Tensor,
        plan: GenerationPlan,
        runners: dict[int, ModelRunner],
        inputs: list[Tensor],
        k: int,
    ) -> ModelRunner:
        """The runner of ``model``; a model taking over at scale ``k`` first fills its KV cache with scales < k."""
        if id(model) in runners:
            return runners[id(model)]
        runner = ModelRunner(model, labels, guided=plan.guided_from(k), plan=plan)
        runners[id(model)] = runner
        if k > 0:
            # prefill: the coarse scales hold few tokens, so re-running them costs little (CoDe, Sec. 3)
            runner.run_blocks(runner.first_input())
            for j in range(1, k):
                runner.run_blocks(runner.embed(j, inputs[j - 1]))
        return runner

    # -- construction helpers -------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> VAR:
        """Build from a plain config mapping (constructor argument names), e.g. :attr:`VAR.config` or a
        ``model=`` config node (its ``name`` key, the preset the node starts from, is ignored)."""
        return cls(**{k: v for k, v in config.items() if k != "name"})

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> VAR:
        """Build a named preset (``var_d16``, ``var_tiny``, ...) with optional argument overrides."""
        from varkit.models.var_presets import var_preset

        return cls(**var_preset(name, **overrides))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"scales={self.scales.describe()}, num_classes={self.num_classes}, codebook_size={self.codebook_size}"


class SamplingSpec(Protocol):
    """What :func:`sample_images` needs of a sampling spec (:class:`varkit.sampling.SamplingConfig`)."""

    def generate_kwargs(self) -> dict[str, Any]: ...


@torch.inference_mode()
def sample_images(
    var: VAR,
    vqvae: nn.Module,
    labels: Tensor,
    *,
    sampling: SamplingSpec | None = None,
    generator: torch.Generator | None = None,
    constraint: EditConstraint | None = None,
    **options: Any,
) -> Tensor:
    """Generate with ``var`` using ``vqvae.quantizer`` and decode with ``vqvae``: images ``(b, 3, H, W)`` in [0, 1].

    ``sampling``: a :class:`varkit.sampling.SamplingConfig` (guidance, filters, speed-ups); without it the
    :meth:`VAR.generate` keyword arguments in ``options`` (``cfg``, ``top_k``, ...) apply, as before the spec
    existed. ``constraint``: zero-shot editing. The VQ-VAE must expose ``quantizer`` and
    ``decode_latents(latent) -> images in [-1, 1]`` (:class:`VQVAE`).
    """
    if sampling is not None:
        if options:
            raise TypeError(f"give either sampling=<SamplingConfig> or keyword options, not both ({sorted(options)})")
        options = sampling.generate_kwargs()
    out = var.generate(
        labels,
        vqvae.quantizer,  # type: ignore[arg-type]
        generator=generator,
        constraint=constraint,
        **options,
    )
    images = vqvae.decode_latents(out.latent)  # type: ignore[operator]
    return images.float().clamp(-1.0, 1.0).add(1.0).mul(0.5)
