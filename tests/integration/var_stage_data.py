"""Tiny inputs for the transformer-stage tests: a random ``vqvae_tiny`` tokenizer directory and token shards.

Not a test module: ``test_train_var.py``, ``test_ddp.py``, ``test_notebooks.py`` import it.
"""

from __future__ import annotations

from pathlib import Path

import torch

TINY_TRAIN_OVERRIDES = [
    "model=var_tiny",
    "trainer=debug",
    "logger=csv",
    "data.batch_size=8",
    "data.shuffle_buffer=16",
    "data.hflip=false",
    "callbacks.sample_grid.every_n_steps=0",
    "callbacks.sample_grid.per_class=1",
    "callbacks.sample_grid.max_classes=3",
    "callbacks.model_checkpoint.every_n_train_steps=2",
    "optim.lr=1e-3",
]


def make_tiny_stage(
    root: Path, *, train_per_class: int = 8, train_shards: int = 2, val_shards: int = 1
) -> dict[str, Path]:
    """Write ``root/tokenizer`` (random vqvae_tiny), ``root/demo`` (16px images) and ``root/tokens`` shards."""
    from varkit.checkpoint.io import save_pretrained
    from varkit.data.demo import generate_demo
    from varkit.data.tokens import write_token_shards
    from varkit.models.vqvae import vqvae_preset

    torch.manual_seed(0)
    vae = vqvae_preset("vqvae_tiny").eval()
    save_pretrained(vae, root / "tokenizer")
    generate_demo(
        root / "demo",
        image_size=16,
        train_per_class=train_per_class,
        val_per_class=2,
        num_classes=10,
        seed=0,
        train_shards=train_shards,
        val_shards=val_shards,
    )
    scales = [tuple(s) for s in vae.scales.sizes]
    per_shard = {"train": train_per_class * 10 // train_shards, "val": 20 // val_shards}
    for split in ("train", "val"):
        write_token_shards(
            vae.tokenize,
            root / "demo" / split,
            root / "tokens" / split,
            image_size=16,
            codebook_size=64,
            scales=scales,
            max_count=per_shard[split],
        )
    return {"tokenizer": root / "tokenizer", "demo": root / "demo", "tokens": root / "tokens"}


def train_overrides(stage: dict[str, Path], root: Path, *extra: str) -> list[str]:
    """Overrides of ``varkit train`` for the tiny stage, runs under ``root/runs``."""
    return [
        f"paths.root={root}",
        f"tokenizer.path={stage['tokenizer']}",
        f"data.train_urls={stage['tokens'] / 'train'}",
        f"data.val_urls={stage['tokens'] / 'val'}",
        f"export.classes={stage['demo'] / 'classes.json'}",
        *TINY_TRAIN_OVERRIDES,
        *extra,
    ]
