"""Streaming image shards: exactly-once epochs across ranks × workers, resampling, restore, skip counting."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from varkit.data import ShardStream, ShardWriter, StreamLoader
from varkit.data.images import ImageSampleDecoder
from varkit.data.modules import WebDataModule
from varkit.data.transforms import ImageTransform

SIZE = 8


def _png(sample_id: int) -> bytes:
    """A uniform image whose colour encodes the sample id (survives decode/crop exactly)."""
    colour = (sample_id % 256, sample_id // 256, 7)
    buffer = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _ids(images: torch.Tensor) -> list[int]:
    pixels = ((images[:, :, 0, 0] + 1) * 127.5).round().long()
    return (pixels[:, 0] + 256 * pixels[:, 1]).tolist()


def write_dataset(
    root: Path,
    num_samples: int = 48,
    per_shard: int = 6,
    corrupt: tuple[int, ...] = (),
    missing_cls: tuple[int, ...] = (),
) -> Path:
    with ShardWriter(root, max_count=per_shard) as writer:
        for i in range(num_samples):
            fields = {"png": b"\x89PNG broken" + bytes(20) if i in corrupt else _png(i)}
            if i not in missing_cls:
                fields["cls"] = str(i % 10).encode()
            writer.write(f"{i:06d}", fields)
    return root


def make_loader(
    urls,
    *,
    batch_size=4,
    num_workers=0,
    rank=0,
    world_size=1,
    shuffle_buffer=0,
    resampled=False,
    seed=0,
    batches_per_epoch=None,
    drop_last=False,
    train=False,
) -> StreamLoader:
    decoder = ImageSampleDecoder(ImageTransform(SIZE, train=train, mid_reso=1.0, hflip=train))
    stream = ShardStream(
        urls,
        decoder,
        batch_size=batch_size,
        shuffle_buffer=shuffle_buffer,
        resampled=resampled,
        seed=seed,
        rank=rank,
        world_size=world_size,
        drop_last=drop_last,
    )
    return StreamLoader(stream, num_workers=num_workers, batches_per_epoch=batches_per_epoch, prefetched_batches=0)


def collect(loader, max_batches=None) -> list[list[int]]:
    batches = []
    for images, labels in loader:
        assert images.shape[1:] == (3, SIZE, SIZE) and images.dtype == torch.float32
        assert labels.dtype == torch.int64
        ids = _ids(images)
        assert labels.tolist() == [i % 10 for i in ids]
        batches.append(ids)
        if max_batches is not None and len(batches) >= max_batches:
            break
    return batches


def test_every_sample_once_per_epoch_across_two_ranks_and_two_workers(tmp_path):
    root = write_dataset(tmp_path / "shards", num_samples=50, per_shard=5, corrupt=(3, 17), missing_cls=(40,))
    seen: list[int] = []
    skipped = 0
    for rank in range(2):
        loader = make_loader(str(root), rank=rank, world_size=2, num_workers=2, shuffle_buffer=8, seed=5)
        for epoch in range(2):
            ids = [i for batch in collect(loader) for i in batch]
            assert len(ids) == len(set(ids))
            if epoch == 0:
                seen += ids
        skipped += loader.skip_stats.total
        assert loader.skip_stats.total == loader.skip_stats.corrupt + loader.skip_stats.missing_keys
    expected = sorted(set(range(50)) - {3, 17, 40})
    assert sorted(seen) == expected  # no overlap between ranks, nothing lost
    assert skipped == 2 * 3  # two epochs, three bad samples, counted exactly once each


def test_shuffle_changes_order_between_epochs_but_is_seeded(tmp_path):
    root = write_dataset(tmp_path / "s")
    a = make_loader(str(root), shuffle_buffer=16, seed=1)
    b = make_loader(str(root), shuffle_buffer=16, seed=1)
    first, second = collect(a), collect(a)
    assert first == collect(b)
    assert first != second and sorted(i for b in first for i in b) == sorted(i for b in second for i in b) == list(
        range(48)
    )


def test_resampled_stream_is_reproducible_from_seed(tmp_path):
    root = write_dataset(tmp_path / "s")

    def run(seed: int, rank: int) -> list[list[int]]:
        options = dict(resampled=True, seed=seed, shuffle_buffer=8, batches_per_epoch=10, train=True)
        return collect(make_loader(str(root), rank=rank, world_size=2, **options))

    assert run(3, 0) == run(3, 0)
    assert run(3, 0) != run(4, 0)
    assert run(3, 0) != run(3, 1)  # per-rank streams differ
    assert len(run(3, 0)) == 10


def test_resampled_train_augmentation_is_reproducible(tmp_path):
    root = write_dataset(tmp_path / "s")
    images = []
    for _ in range(2):
        loader = make_loader(str(root), resampled=True, seed=2, batches_per_epoch=3, train=True)
        images.append(torch.cat([x for x, _ in loader]))
    torch.testing.assert_close(images[0], images[1], rtol=0, atol=0)


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("resampled", [False, True])
def test_restored_loader_continues_the_stream(tmp_path, num_workers, resampled):
    root = write_dataset(tmp_path / "s", num_samples=60, per_shard=5, corrupt=(9,))
    options = dict(
        num_workers=num_workers,
        shuffle_buffer=8,
        seed=7,
        resampled=resampled,
        train=True,
        batches_per_epoch=6 if resampled else None,
    )
    reference = make_loader(str(root), **options)
    epoch0, epoch1 = collect(reference), collect(reference)
    assert epoch0 != epoch1
    interrupted = make_loader(str(root), **options)
    assert collect(interrupted) == epoch0
    iterator = iter(interrupted)
    head = [_ids(next(iterator)[0]) for _ in range(3)]  # stop mid-way through epoch 1
    state = interrupted.state_dict()
    del iterator
    restored = make_loader(str(root), **options)
    restored.load_state_dict(state)
    assert head + collect(restored) == epoch1
    assert restored.skip_stats.corrupt == reference.skip_stats.corrupt


def test_restore_skip_counter_is_exact(tmp_path):
    root = write_dataset(tmp_path / "s", num_samples=40, per_shard=10, corrupt=(1, 2, 30))
    loader = make_loader(str(root), batch_size=4)
    iterator = iter(loader)
    next(iterator)  # first batch: samples 0..6 read, 1 and 2 skipped
    state = loader.state_dict()
    assert state["skip_stats"]["corrupt"] == 2
    restored = make_loader(str(root), batch_size=4)
    restored.load_state_dict(state)
    collect(restored)
    assert restored.skip_stats.corrupt == 3


def test_truncated_tar_and_partial_sample_are_counted(tmp_path):
    root = write_dataset(tmp_path / "s", num_samples=20, per_shard=10)
    shard = root / "shard-000000.tar"
    data = shard.read_bytes()
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    cut = members[9].offset_data + 10  # inside the 5th sample's png payload (members sorted cls, png per key)
    shard.write_bytes(data[:cut])
    loader = make_loader(str(root))
    ids = [i for batch in collect(loader) for i in batch]
    assert sorted(ids) == [0, 1, 2, 3, *range(10, 20)]
    stats = loader.skip_stats
    assert stats.shard_errors >= 1
    assert stats.missing_keys == 1  # sample 4 arrives with its .cls but without its image


def test_impossible_setups_fail_with_one_clear_sentence(tmp_path):
    root = write_dataset(tmp_path / "s", num_samples=18, per_shard=6)
    with pytest.raises(ValueError, match=r"3 shards cannot feed 2 ranks × 2 workers = 4 readers"):
        make_loader(str(root), world_size=2, num_workers=2)
    with pytest.raises(ValueError, match=r"holds no \.tar shards"):
        (tmp_path / "empty_dir").mkdir()
        make_loader(str(tmp_path / "empty_dir"))
    make_loader(str(root), world_size=2, num_workers=2, resampled=True, batches_per_epoch=2)  # resampling is fine


def test_urls_accept_patterns_lists_dirs_and_pipes(tmp_path):
    root = write_dataset(tmp_path / "s", num_samples=12, per_shard=4)
    pattern = str(root / "shard-{000000..000002}.tar")
    as_list = [str(root / f"shard-{i:06d}.tar") for i in range(3)]
    piped = [f"pipe:cat {p}" for p in as_list]
    expected = collect(make_loader(str(root)))
    for urls in (pattern, as_list, piped, [str(root / "shard-{000000..000001}.tar"), as_list[2]]):
        assert collect(make_loader(urls)) == expected


def test_datamodule_reads_env_topology(tmp_path, monkeypatch):
    root = write_dataset(tmp_path / "s", num_samples=24, per_shard=6)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    dm = WebDataModule(str(root), str(root), image_size=SIZE, mid_reso=1.0, batch_size=3, shuffle_buffer=0)
    dm.setup("fit")
    ids = [i for images, _ in dm.train_dataloader() for i in _ids(images)]
    assert sorted(ids) == list(range(6, 12)) + list(range(18, 24))  # shards 1 and 3
    val = [i for images, _ in dm.val_dataloader() for i in _ids(images)]
    assert sorted(val) == sorted(ids)
    assert dm.skip_stats.total == 0


def test_validation_uses_fewer_workers_when_shards_are_few(tmp_path):
    root = write_dataset(tmp_path / "s", num_samples=12, per_shard=4)  # 3 shards
    dm = WebDataModule(
        str(root), str(root), image_size=SIZE, mid_reso=1.0, batch_size=2, num_workers=2, rank=0, world_size=2
    )
    with pytest.raises(ValueError, match="3 shards cannot feed 2 ranks × 2 workers"):
        dm.setup("fit")  # training refuses: the loader position depends on the worker count
    dm = WebDataModule(
        None, str(root), image_size=SIZE, mid_reso=1.0, batch_size=2, num_workers=2, rank=0, world_size=2
    )
    loader = dm.val_dataloader()
    assert loader.num_workers == 1
    assert sorted(i for images, _ in loader for i in _ids(images)) == [0, 1, 2, 3, 8, 9, 10, 11]


def test_validation_cut_short_starts_from_the_same_samples_every_time(tmp_path):
    """limit_val_batches breaks validation off mid-stream; the next run must see the same samples again."""
    root = write_dataset(tmp_path / "s", num_samples=24, per_shard=6)
    dm = WebDataModule(None, str(root), image_size=SIZE, mid_reso=1.0, batch_size=4, rank=0, world_size=1)
    loader = dm.val_dataloader()
    first = collect(loader, max_batches=2)
    second = collect(loader, max_batches=2)
    assert first == second == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # a training stream, in contrast, continues where it stopped
    train = make_loader(str(root), batch_size=4)
    assert collect(train, max_batches=1) == [[0, 1, 2, 3]]
    assert collect(train, max_batches=1) == [[4, 5, 6, 7]]
