"""``varkit data pack`` shuffles across shards by default (seeded): every shard mixes the classes."""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from varkit.data.pack import pack_images


def _class_folder(root: Path, classes: int = 5, per_class: int = 40) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root


def _labels_per_shard(folder: Path) -> list[list[int]]:
    shards = []
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            shards.append([int(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".cls")])
    return shards


def test_every_shard_of_a_packed_class_folder_holds_a_near_uniform_class_mix(tmp_path: Path) -> None:
    source = _class_folder(tmp_path / "src")
    summary = pack_images(source, tmp_path / "out", max_count=50)  # 200 samples, 4 shards of 50
    shards = _labels_per_shard(tmp_path / "out")
    assert len(shards) == 4 and sum(map(len, shards)) == 200
    for labels in shards:
        counts = Counter(labels)
        assert set(counts) == set(range(5)), counts  # every class in every shard
        # 10 expected per class; a seeded permutation stays well inside [4, 16] (sorted order: 50 of one class)
        assert min(counts.values()) >= 4 and max(counts.values()) <= 16, counts
    info = json.loads((tmp_path / "out" / "pack.json").read_text())
    assert info == {
        "order": "shuffle",
        "seed": 0,
        "samples": 200,
        "shards": summary.shards,
        "classes": 5,
        "skipped": 0,
    }


def test_sorted_order_is_kept_as_an_option_and_the_seed_changes_the_permutation(tmp_path: Path) -> None:
    source = _class_folder(tmp_path / "src", classes=4, per_class=10)
    pack_images(source, tmp_path / "sorted", max_count=10, order="sorted")
    assert [set(labels) for labels in _labels_per_shard(tmp_path / "sorted")] == [{0}, {1}, {2}, {3}]
    assert json.loads((tmp_path / "sorted" / "pack.json").read_text())["seed"] is None
    pack_images(source, tmp_path / "a", max_count=10, seed=1)
    pack_images(source, tmp_path / "b", max_count=10, seed=1)
    pack_images(source, tmp_path / "c", max_count=10, seed=2)
    assert _labels_per_shard(tmp_path / "a") == _labels_per_shard(tmp_path / "b")
    assert _labels_per_shard(tmp_path / "a") != _labels_per_shard(tmp_path / "c")
    with pytest.raises(ValueError, match="order must be shuffle or sorted"):
        pack_images(source, tmp_path / "d", order="random")
