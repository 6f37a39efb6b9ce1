"""Benchmark: the training step through ``VARModule`` + Lightning vs the bare transformer step (must be within 10 %).

VAR-d6 shape (depth 6, width 384, 6 heads, 1000 classes, 4096 codes of dim 32, var_256 scales = 680 tokens),
batch 4, bf16 autocast on CPU, AdamW. Both sides do forward, cross-entropy over all tokens, backward, AdamW step.

* bare: the loop of ``benchmarks/train_step.py`` (precomputed teacher-forcing inputs, no clipping, no logging);
* module: ``Trainer(precision="bf16-mixed").fit(VARModule)`` on token batches — teacher-forcing inputs built from
  tokens by the quantizer, per-scale loss/accuracy logging, weight-decay schedule, LR scheduler; gradient clipping
  off (``optim.grad_clip=0``, the bare loop does not clip either) and no logger/callbacks. Per-step time is taken
  from ``on_train_batch_start`` to ``on_train_batch_end`` (data loading excluded on both sides).

The bare loop runs before and after the module so that drifting machine load affects both. Prints medians::

    python benchmarks/var_module_step.py --runs 8
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F


class _TokenizerStandIn(torch.nn.Module):
    """Only what the transformer stage uses from a tokenizer with token batches: ``scales`` and ``quantizer``."""

    def __init__(self, quantizer: torch.nn.Module, scales: Any) -> None:
        super().__init__()
        self.quantizer = quantizer
        self.scales = scales


def model_config(depth: int) -> dict[str, Any]:
    from varkit.models.var_presets import official_shape

    return {**official_shape(depth), "attention": "sdpa"}


def bare_steps(depth: int, batch: int, runs: int, bf16: bool = True) -> list[float]:
    from varkit.models.var import VAR

    torch.manual_seed(0)
    model = VAR(**model_config(depth)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, betas=(0.9, 0.95))
    total = model.scales.total_tokens
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 1000, (batch,), generator=gen)
    inputs = torch.randn(batch, total - model.scales.first_tokens, 32, generator=gen)
    targets = torch.randint(0, 4096, (batch, total), generator=gen)

    def once() -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(labels, inputs, generator=gen)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    once()
    return [once() for _ in range(runs)]


def module_steps(depth: int, batch: int, runs: int, bf16: bool = True) -> list[float]:
    import lightning as L

    from varkit.lit.var_module import VARModule
    from varkit.models.factory import model_arguments
    from varkit.registry import QUANTIZERS, SCALE_SCHEDULES

    config = model_config(depth)
    scales = SCALE_SCHEDULES.resolve(config["scales"])
    quantizer = QUANTIZERS.build({"name": "msvq", "codebook_size": 4096, "code_dim": 32, "phi_count": 4})
    tokenizer = _TokenizerStandIn(quantizer, scales).eval()
    torch.manual_seed(0)
    module = VARModule(
        model_arguments(config, tokenizer, "sdpa"),
        optim={"lr": 1e-4, "grad_clip": 0.0, "warmup_steps": 0},
        tokenizer=tokenizer,
    )
    gen = torch.Generator().manual_seed(0)
    total = scales.total_tokens
    batches = [
        (torch.randint(0, 4096, (batch, total), generator=gen), torch.randint(0, 1000, (batch,), generator=gen))
        for _ in range(runs + 1)
    ]
    times: list[float] = []

    class Timer(L.Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            self.start = time.perf_counter()

        def on_train_batch_end(self, *args: Any) -> None:
            times.append(time.perf_counter() - self.start)

    trainer = L.Trainer(
        accelerator="cpu",
        precision="bf16-mixed" if bf16 else "32-true",
        max_steps=runs + 1,
        logger=False,
        callbacks=[Timer()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    loader = torch.utils.data.DataLoader(batches, batch_size=None)  # a plain list would mean several loaders
    trainer.fit(module, train_dataloaders=loader)
    return times[1:]  # the first step allocates optimizer state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument(
        "--precision", choices=["bf16", "fp32"], default="bf16", help="fp32 on CPUs without bf16 units (no AMX)"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    import logging

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    bf16 = args.precision == "bf16"
    first = bare_steps(args.depth, args.batch, args.runs, bf16)
    through_module = module_steps(args.depth, args.batch, args.runs, bf16)
    second = bare_steps(args.depth, args.batch, args.runs, bf16)
    bare = statistics.median(first + second)
    module = statistics.median(through_module)
    precision = "bf16 autocast" if bf16 else "fp32"
    print(f"VAR-d{args.depth} shape, batch {args.batch}, 680 tokens, {precision}, 2 threads, median of runs")
    print(f"{'path':>22} {'step s':>8} {'runs':>5}")
    print(f"{'bare model':>22} {bare:>8.3f} {len(first + second):>5}")
    print(f"{'VARModule + Trainer':>22} {module:>8.3f} {len(through_module):>5}")
    print(f"{'ratio module / bare':>22} {module / bare:>8.3f}")


if __name__ == "__main__":
    main()
