"""Every ``conf/data`` option composes and instantiates; the demo options read a generated demo dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from varkit.config import config_dir, safe_instantiate
from varkit.data.demo import generate_demo
from varkit.data.modules import TokenDataModule, WebDataModule
from varkit.data.tokens import write_token_shards

OPTIONS = sorted(p.stem for p in (Path(config_dir()) / "data").glob("*.yaml"))


def _compose(name: str, data_dir: Path):
    primary = "train_var" if "tokens" in name else "train_tokenizer"
    with initialize_config_dir(str(config_dir()), version_base=None):
        return compose(primary, overrides=[f"data={name}", f"paths.data_dir={data_dir}"])


@pytest.mark.parametrize("name", OPTIONS)
def test_data_option_instantiates(name, tmp_path):
    datamodule = safe_instantiate(_compose(name, tmp_path).data)
    assert isinstance(datamodule, TokenDataModule if "tokens" in name else WebDataModule)
    assert str(tmp_path) in str(datamodule.train_urls)


def test_demo_options_read_demo_data(tmp_path):
    generate_demo(tmp_path / "demo", train_per_class=4, val_per_class=2, train_shards=4, val_shards=2)
    images_dm = safe_instantiate(_compose("demo_images", tmp_path).data, batch_size=8)
    images_dm.setup("fit")
    images, labels = next(iter(images_dm.train_dataloader()))
    assert images.shape == (8, 3, 32, 32) and images.min() >= -1 and images.max() <= 1 and labels.max() < 10

    def tokenize(batch: torch.Tensor) -> list[torch.Tensor]:
        return [(batch.mean(dim=(1, 2, 3)) > 0).long()[:, None], torch.zeros(batch.shape[0], 4, dtype=torch.long)]

    for split in ("train", "val"):
        write_token_shards(
            tokenize,
            str(tmp_path / "demo" / split),
            tmp_path / "demo_tokens" / split,
            image_size=32,
            codebook_size=2,
            flip=split == "train",
            max_count=10,
        )
    tokens_dm = safe_instantiate(_compose("demo_tokens", tmp_path).data, batch_size=8)
    tokens_dm.setup("fit")
    assert tokens_dm.scales == [(1, 1), (2, 2)]
    indices, labels = next(iter(tokens_dm.train_dataloader()))
    assert indices.shape == (8, 5) and indices.dtype == torch.int64
    val_indices, _ = next(iter(tokens_dm.val_dataloader()))
    assert val_indices.shape == (8, 5)
