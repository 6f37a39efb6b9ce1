"""Token shards: written pyramids read back equal ``tokenize(images)`` on the same center-cropped images."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from varkit.data.demo import generate_demo
from varkit.data.modules import TokenDataModule, WebDataModule
from varkit.data.tokens import read_token_info, split_scales, write_token_shards

SCALES = [(1, 1), (2, 2), (4, 4)]
LEVELS = 4  # per colour channel -> codebook of 64


def pooled_colour_tokens(images: torch.Tensor) -> list[torch.Tensor]:
    """A tiny real tokenizer: area-pool to each scale, quantise each pooled RGB colour to 4 levels per channel."""
    tokens = []
    for h, w in SCALES:
        pooled = F.adaptive_avg_pool2d(images, (h, w))  # (b, 3, h, w) in [-1, 1]
        levels = ((pooled + 1) / 2 * LEVELS).clamp(0, LEVELS - 1).long()
        index = levels[:, 0] * LEVELS * LEVELS + levels[:, 1] * LEVELS + levels[:, 2]
        tokens.append(index.flatten(1))
    return tokens


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    generate_demo(root, image_size=32, train_per_class=4, val_per_class=2, train_shards=2, val_shards=2)
    return root


def _image_batches(urls: str, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    dm = WebDataModule(None, urls, image_size=image_size, batch_size=7)
    batches = list(dm.val_dataloader())
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def test_token_shards_equal_tokenize_of_center_cropped_images(tmp_path, demo):
    out = tmp_path / "tokens"
    summary = write_token_shards(
        pooled_colour_tokens, str(demo / "train"), out, image_size=24, codebook_size=64, batch_size=5, max_count=16
    )
    assert summary["samples"] == 40 and summary["scales"] == [list(s) for s in SCALES]
    assert read_token_info(out)["dtype"] == "uint16"
    with tarfile.open(out / "shard-000000.tar") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".tokens.npy"))
        stored = np.load(io.BytesIO(tar.extractfile(member).read()))
    assert stored.dtype == np.uint16 and stored.shape == (21,)

    images, labels = _image_batches(str(demo / "train"), 24)
    expected = torch.cat(pooled_colour_tokens(images), dim=1)
    dm = TokenDataModule(None, str(out), batch_size=6)
    batches = list(dm.val_dataloader())
    indices = torch.cat([x for x, _ in batches])
    assert indices.dtype == torch.int64 and indices.shape == (40, 21)
    torch.testing.assert_close(indices, expected, rtol=0, atol=0)
    assert torch.equal(torch.cat([y for _, y in batches]), labels)
    assert len(set(expected[:, 0].tolist())) > 3  # the fake tokenizer is not constant


def test_flip_rows_and_per_scale_batches(tmp_path, demo):
    out = tmp_path / "tokens"
    write_token_shards(pooled_colour_tokens, str(demo / "val"), out, image_size=32, codebook_size=64, flip=True)
    images, _ = _image_batches(str(demo / "val"), 32)
    plain = torch.cat(pooled_colour_tokens(images), dim=1)
    flipped = torch.cat(pooled_colour_tokens(images.flip(-1)), dim=1)
    assert not torch.equal(plain, flipped)

    dm = TokenDataModule(str(out), None, batch_size=4, hflip=True, shuffle_buffer=0, per_scale=True, drop_last=False)
    dm.setup("fit")
    rows = []
    for per_scale, labels in dm.train_dataloader():
        assert [t.shape[1] for t in per_scale] == [1, 4, 16] and labels.shape == (per_scale[0].shape[0],)
        rows.append(torch.cat(per_scale, dim=1))
    rows = torch.cat(rows)
    is_plain = (rows == plain).all(1)
    is_flipped = (rows == flipped).all(1)
    assert bool((is_plain | is_flipped).all()) and is_plain.any() and is_flipped.any()
    assert [t.shape for t in split_scales(plain, SCALES)] == [(20, 1), (20, 4), (20, 16)]


def test_token_stream_resampled_restore(tmp_path, demo):
    out = tmp_path / "tokens"
    write_token_shards(pooled_colour_tokens, str(demo / "train"), out, image_size=32, codebook_size=64, max_count=10)
    options = dict(batch_size=4, resampled=True, epoch_samples=24, seed=9, shuffle_buffer=5)
    reference = TokenDataModule(str(out), **options)
    reference.setup("fit")
    loader = reference.train_dataloader()
    full = [x for x, _ in loader] + [x for x, _ in loader]
    interrupted = TokenDataModule(str(out), **options)
    interrupted.setup("fit")
    iterator = iter(interrupted.train_dataloader())
    head = [next(iterator)[0] for _ in range(4)]
    state = interrupted.train_dataloader().state_dict()
    restored = TokenDataModule(str(out), **options)
    restored.setup("fit")
    restored.train_dataloader().load_state_dict(state)
    tail = [x for x, _ in restored.train_dataloader()] + [x for x, _ in restored.train_dataloader()]
    assert len(full) == 12
    assert all(torch.equal(a, b) for a, b in zip(head + tail, full, strict=True))


def test_out_of_range_tokens_are_refused(tmp_path, demo):
    with pytest.raises(ValueError, match="outside"):
        write_token_shards(pooled_colour_tokens, str(demo / "val"), tmp_path, image_size=32, codebook_size=8)
