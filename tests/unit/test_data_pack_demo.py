"""``pack`` and ``demo``: round-trips, determinism, unreadable files, learnability of the demo classes."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from varkit.data import read_classes
from varkit.data.demo import DEMO_CLASSES, generate_demo
from varkit.data.modules import WebDataModule
from varkit.data.pack import pack_images
from varkit.data.transforms import center_crop, resize_shorter_side


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar"))}


def _read_shards(folder: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


@pytest.fixture
def imagenet_folder(tmp_path) -> tuple[Path, dict[str, tuple[str, np.ndarray]]]:
    rng = np.random.default_rng(0)
    source = tmp_path / "src"
    originals = {}
    for cls in ("cat", "dog", "zebra"):
        (source / cls).mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 256, size=(12 + i, 10, 3), dtype=np.uint8)
            name = f"{cls}/img{i}.png"
            Image.fromarray(pixels).save(source / name)
            originals[name] = (cls, pixels)
    (source / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (source / "dog" / "notes.txt").write_text("not an image")
    return source, originals


def test_pack_round_trips_labels_and_pixels(tmp_path, imagenet_folder):
    source, originals = imagenet_folder
    out = tmp_path / "out"
    summary = pack_images(source, out, max_count=4)
    assert summary.samples == 15 and len(summary.shards) == 4
    assert len(summary.skipped) == 1 and "dog/broken.png" in summary.skipped[0]
    classes = read_classes(out)
    assert classes == ["cat", "dog", "zebra"]
    samples = _read_shards(out)
    assert len(samples) == 15
    for fields in samples.values():
        meta = json.loads(fields["json"])
        cls, pixels = originals[meta["path"]]
        assert classes[int(fields["cls"])] == cls == meta["class"]
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(fields["png"]))), pixels)


def test_pack_is_byte_deterministic_across_runs_and_workers(tmp_path, imagenet_folder):
    source, _ = imagenet_folder
    pack_images(source, tmp_path / "a", max_count=4, resolution=8, image_format="jpg")
    pack_images(source, tmp_path / "b", max_count=4, resolution=8, image_format="jpg", workers=2)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert len(_digest(tmp_path / "a")) == 4
    assert (tmp_path / "a" / "classes.json").read_bytes() == (tmp_path / "b" / "classes.json").read_bytes()


def test_pack_flat_folder_with_csv_resized_then_read_back_by_the_datamodule(tmp_path):
    rng = np.random.default_rng(1)
    source = tmp_path / "flat"
    source.mkdir()
    rows, expected = ["filename,label"], {}
    for i in range(6):
        pixels = rng.integers(0, 256, size=(20, 28, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(source / f"{i}.png")
        rows.append(f"{i}.png,{i % 3}")
        image = center_crop(resize_shorter_side(Image.fromarray(pixels), 16), 16)
        expected[f"{i}.png"] = (i % 3, np.asarray(image))
    (source / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    summary = pack_images(
        source, out, labels_file=source / "labels.csv", resolution=16, image_format="png", order="sorted"
    )
    assert summary.samples == 6 and not summary.skipped
    assert read_classes(out) == ["0", "1", "2"]
    for fields in _read_shards(out).values():
        label, pixels = expected[json.loads(fields["json"])["path"]]
        assert int(fields["cls"]) == label
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(fields["png"]))), pixels)
    # the stream delivers the same pixels, in [-1, 1]
    dm = WebDataModule(None, str(out), image_size=16, mid_reso=1.0, batch_size=6)
    images, labels = next(iter(dm.val_dataloader()))
    ordered = [expected[f"{i}.png"] for i in range(6)]
    assert labels.tolist() == [label for label, _ in ordered]
    pixels = ((images + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(pixels, np.stack([p for _, p in ordered]))


def test_demo_is_deterministic_and_documented(tmp_path):
    small = dict(train_per_class=3, val_per_class=1, train_shards=2, val_shards=2)
    info = generate_demo(tmp_path / "a", seed=3, **small)
    generate_demo(tmp_path / "b", seed=3, **small)
    generate_demo(tmp_path / "c", seed=4, **small)
    for split in ("train", "val"):
        assert _digest(tmp_path / "a" / split) == _digest(tmp_path / "b" / split)
        assert _digest(tmp_path / "a" / split) != _digest(tmp_path / "c" / split)
    assert info["train"]["samples"] == 30 and info["val"]["samples"] == 10 and info["num_classes"] == 10
    assert read_classes(tmp_path / "a") == [c.name for c in DEMO_CLASSES]
    assert json.loads((tmp_path / "a" / "info.json").read_text())["seed"] == 3
    assert (tmp_path / "a" / "README.md").exists()
    samples = _read_shards(tmp_path / "a" / "train")
    assert sorted(int(f["cls"]) for f in samples.values()) == sorted(list(range(10)) * 3)
    image = Image.open(io.BytesIO(next(iter(samples.values()))["png"]))
    assert image.size == (32, 32) and image.mode == "RGB"


def test_demo_classes_are_separable_by_a_trivial_classifier(tmp_path):
    """Nearest class-mean on 4x4 thumbnails already beats chance by far: tiny models learn it in minutes."""
    generate_demo(tmp_path, train_per_class=30, val_per_class=10, train_shards=1, val_shards=1)

    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        samples = _read_shards(tmp_path / split).values()
        x = [np.asarray(Image.open(io.BytesIO(s["png"])).resize((4, 4), Image.Resampling.BOX), float) for s in samples]
        return np.stack(x).reshape(len(x), -1), np.array([int(s["cls"]) for s in samples])

    train_x, train_y = features("train")
    val_x, val_y = features("val")
    means = np.stack([train_x[train_y == c].mean(0) for c in range(10)])
    predicted = np.argmin(((val_x[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (predicted == val_y).mean() > 0.6


def test_demo_rejects_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        generate_demo(tmp_path, image_size=8)
    with pytest.raises(ValueError, match="num_classes"):
        generate_demo(tmp_path, num_classes=11)
