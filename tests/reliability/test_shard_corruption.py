"""Corruption matrix for shards: every kind of damage is detected, counted per reason and never silent — a shard
cut at a tar header boundary, cut mid-member, a sample without ``.cls``, an undecodable image, an empty tar —
plus the stops: a pass with no batch at all, too many skipped samples, tokens past the codebook, token shards of
another tokenizer."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from .conftest import run_varkit, snapshot, train_args

NUM_SAMPLES = 12


def _png(value: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


def _write(folder: Path, *, per_shard: int = NUM_SAMPLES, damage: dict[int, dict] | None = None) -> Path:
    """Image shards through ShardWriter (with its shards.json index); ``damage[i]`` replaces sample i's fields."""
    from varkit.data.shards import ShardWriter

    with ShardWriter(folder, max_count=per_shard) as writer:
        for i in range(NUM_SAMPLES):
            fields = {"png": _png(i * 10), "cls": str(i % 3).encode()}
            writer.write(f"{i:06d}", (damage or {}).get(i, fields))
    return folder


def _read(folder: Path, **options):
    """Every sample of one pass (no shuffling), and the loader's skip statistics."""
    from varkit.data.images import ImageSampleDecoder
    from varkit.data.streaming import ShardStream, StreamLoader
    from varkit.data.transforms import ImageTransform

    stream = ShardStream(str(folder), ImageSampleDecoder(ImageTransform(8, train=False, mid_reso=1.0)), batch_size=1)
    loader = StreamLoader(stream, **options)
    labels = [int(label) for _, labels in loader for label in labels]
    return labels, loader.skip_stats


def _cut(shard: Path, offset: int) -> None:
    shard.write_bytes(shard.read_bytes()[:offset])


def _members(shard: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(shard) as tar:
        return tar.getmembers()


def test_intact_shards_skip_nothing(tmp_path: Path) -> None:
    labels, stats = _read(_write(tmp_path / "s"))
    assert len(labels) == NUM_SAMPLES and stats.total == stats.shard_errors == stats.lost == 0


def test_cut_at_header_boundary_is_detected_and_counted(tmp_path: Path, caplog) -> None:
    folder = _write(tmp_path / "s")
    shard = folder / "shard-000000.tar"
    _cut(shard, _members(shard)[10].offset)  # exactly before sample 5's header: tar readers stop silently here
    with caplog.at_level("WARNING"):
        labels, stats = _read(folder)
    assert len(labels) == 5
    assert stats.shard_errors == 1 and stats.lost == NUM_SAMPLES - 5
    assert "7 of its 12 samples were lost" in caplog.text


def test_cut_mid_member_is_detected_and_counted(tmp_path: Path) -> None:
    folder = _write(tmp_path / "s")
    shard = folder / "shard-000000.tar"
    _cut(shard, _members(shard)[9].offset_data + 20)  # inside sample 4's png
    labels, stats = _read(folder)
    assert len(labels) == 4
    assert stats.shard_errors == 1
    assert stats.lost + stats.missing_keys == NUM_SAMPLES - 4


def test_missing_cls_is_counted(tmp_path: Path) -> None:
    labels, stats = _read(_write(tmp_path / "s", damage={3: {"png": _png(1)}}))
    assert len(labels) == NUM_SAMPLES - 1 and stats.missing_keys == 1 and stats.corrupt == 0


def test_undecodable_image_is_counted(tmp_path: Path) -> None:
    labels, stats = _read(_write(tmp_path / "s", damage={2: {"png": b"\x89PNG garbage", "cls": b"1"}}))
    assert len(labels) == NUM_SAMPLES - 1 and stats.corrupt == 1


def test_empty_tar_is_counted(tmp_path: Path) -> None:
    folder = _write(tmp_path / "s", per_shard=6)
    (folder / "shard-000001.tar").write_bytes(b"")
    labels, stats = _read(folder)
    assert len(labels) == 6 and stats.shard_errors == 1 and stats.lost == 6


def test_pass_without_any_batch_stops(tmp_path: Path) -> None:
    from varkit.errors import DataSetupError

    folder = _write(tmp_path / "s")
    (folder / "shard-000000.tar").write_bytes(b"\0" * 100)
    with pytest.raises(DataSetupError, match="gave no batch"):
        _read(folder)


def test_too_many_skips_stop_the_run(tmp_path: Path) -> None:
    from varkit.data.streaming import MIN_SKIPS_TO_STOP
    from varkit.errors import DataSetupError

    assert MIN_SKIPS_TO_STOP <= NUM_SAMPLES + 4
    damage = {i: {"png": b"broken", "cls": b"1"} for i in range(NUM_SAMPLES)}
    folder = _write(tmp_path / "bad", damage=damage)
    _write(tmp_path / "bad2", damage=damage)
    for shard in (tmp_path / "bad2").glob("*.tar"):
        shard.rename(folder / "shard-000001.tar")
    (folder / "shards.json").unlink()
    with pytest.raises(DataSetupError, match="max_skipped_fraction"):
        _read(folder)
    labels, stats = _read(_write(tmp_path / "ok", damage={0: {"png": b"broken", "cls": b"1"}}))
    assert stats.corrupt == 1
    assert len(labels) == NUM_SAMPLES - 1  # a few bad samples do not stop anything


def test_token_past_the_codebook_is_skipped_not_an_index_error() -> None:
    from varkit.data.streaming import SkipSample
    from varkit.data.tokens import TokenSampleDecoder, _encode_npy

    decoder = TokenSampleDecoder(4, hflip=False, codebook_size=8)
    sample = {"tokens.npy": _encode_npy(np.array([1, 2, 3, 8], dtype=np.uint16)), "cls": b"1"}
    with pytest.raises(SkipSample, match="outside the 8-code book"):
        decoder(sample, np.random.default_rng(0))


def test_tokenize_reports_what_a_truncated_input_lost(stage, tmp_path: Path) -> None:
    folder = _write(tmp_path / "images")
    shard = folder / "shard-000000.tar"
    _cut(shard, _members(shard)[12].offset)
    out = tmp_path / "tokens"
    result = run_varkit(
        "data", "tokenize", "--tokenizer", str(stage["tokenizer"]), "--input", str(folder), "--output", str(out),
        "--image-size", "16", "--no-progress",
    )  # fmt: skip
    assert result.code == 0, result.err[-2000:]
    assert "lost 6 more" in result.out
    info = json.loads((out / "tokens.json").read_text())
    assert info["samples"] == 6 and len(info["tokenizer"]["weights_sha256"]) == 64


def test_token_shards_of_another_tokenizer_are_refused(stage, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    import shutil

    shutil.copytree(stage["tokens"], tokens)
    for split in ("train", "val"):
        info_file = tokens / split / "tokens.json"
        info = json.loads(info_file.read_text())
        info["tokenizer"] = {**info["tokenizer"], "weights_sha256": "0" * 64}
        info_file.write_text(json.dumps(info))
    before = snapshot(tmp_path)
    result = run_varkit(
        *train_args(stage, tmp_path, f"data.train_urls={tokens / 'train'}", f"data.val_urls={tokens / 'val'}"),
        cwd=tmp_path,
    )
    assert result.code == 2 and "another tokenizer" in result.err and "Traceback" not in result.err, result.err[-2000:]
    assert snapshot(tmp_path) == before


def test_token_shards_of_another_vocabulary_are_refused(stage, tmp_path: Path) -> None:
    from varkit.checkpoint.io import from_pretrained
    from varkit.checkpoint.tokenizer_source import check_token_info
    from varkit.data.tokens import read_token_info
    from varkit.errors import ConfigError

    info = read_token_info(stage["tokens"] / "train")
    vae = from_pretrained(stage["tokenizer"], expect="vqvae")
    check_token_info(info, vae, stage["tokenizer"])  # the right one passes
    with pytest.raises(ConfigError, match="512-entry codebook"):
        check_token_info({**info, "codebook_size": 512}, vae, stage["tokenizer"])
    with pytest.raises(ConfigError, match="written with scales"):
        check_token_info({**info, "scales": [[1, 1], [2, 2]]}, vae, stage["tokenizer"])


def test_rewriting_a_shard_folder_leaves_no_stale_shards(tmp_path: Path) -> None:
    """A second, shorter write into the same folder must not leave the first write's later shards to be read."""
    folder = _write(tmp_path / "s", per_shard=3)
    assert len(list(folder.glob("*.tar"))) == 4
    from varkit.data.shards import ShardWriter

    with ShardWriter(folder, max_count=3) as writer:
        for i in range(4):
            writer.write(f"{i:06d}", {"png": _png(i), "cls": b"0"})
    labels, stats = _read(folder)
    assert (
        len(labels) == 4
        and stats.lost == 0
        and sorted(p.name for p in folder.glob("*.tar"))
        == [
            "shard-000000.tar",
            "shard-000001.tar",
        ]
    )


def test_resampled_stream_of_unreadable_shards_stops(tmp_path: Path) -> None:
    """A resampled stream never ends by itself: unreadable shards drawn again and again must stop it."""
    from varkit.data.images import ImageSampleDecoder
    from varkit.data.streaming import ShardStream, StreamLoader
    from varkit.data.transforms import ImageTransform
    from varkit.errors import DataSetupError

    folder = _write(tmp_path / "s", per_shard=6)
    for shard in folder.glob("*.tar"):
        shard.write_bytes(b"x" * 10)
    decoder = ImageSampleDecoder(ImageTransform(8, train=False, mid_reso=1.0))
    loader = StreamLoader(ShardStream(str(folder), decoder, batch_size=1, resampled=True), batches_per_epoch=5)
    with pytest.raises(DataSetupError, match="shards in a row were unreadable"):
        list(loader)
