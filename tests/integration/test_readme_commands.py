"""Every command of the README's "Train on your own images" and "Fine-tune the released VAR weights" sections, run
in order on a small folder of real photographs (scikit-image's bundled samples), as a user would type them.

Only tiny-budget overrides are appended (listed in :data:`TINY`; Hydra takes the last value of a key): fewer steps,
small batches, one sample per class. The released weights are random weights in the official format
(``official_format.py``) at the released shapes, except that the stand-in ``var_d16.pth`` has 2 of its 16 blocks
(``varkit convert`` reads the depth from the file; ``model.depth=2`` is appended) — time only.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from official_format import official_var_state, official_vqvae_state
from PIL import Image

from varkit.cli import main

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"
SECTIONS = ("## Train on your own images", "## Fine-tune the released VAR weights")
PHOTOS = {
    "cat": ["chelsea", "cat"],
    "space": ["rocket", "astronaut", "hubble_deep_field"],
    "microscopy": ["immunohistochemistry", "retina"],
}

#: overrides appended to a README command, by sub-command (and by whether it works at 256 px)
TINY: dict[str, list[str]] = {
    "data pack": ["--no-progress"],
    "data tokenize": ["--batch-size", "4", "--no-progress"],
    "train-tokenizer": [
        "trainer=debug",
        "trainer.max_steps=2",
        "data.batch_size=2",
        "data.val_batch_size=2",
        "data.shuffle_buffer=4",
        "optim.warmup_steps=1",
    ],
    "train": [
        "trainer=debug",
        "trainer.max_steps=2",
        "data.batch_size=2",
        "data.shuffle_buffer=4",
        "callbacks.sample_grid.every_n_steps=0",
        "callbacks.sample_grid.at_end=false",
    ],
    "sample": ["per_class=1", "device=cpu", "precision=fp32", "progress=false"],
    "eval": ["generate.per_class=3", "generate.batch_size=6", "generate.warmup=false", "device=cpu", "batch_size=8"],
}
TINY_256: dict[str, list[str]] = {
    # train only the decoder's output layers: backward then stops there (a full 256 px decoder step takes minutes)
    "train-tokenizer": [
        "data.batch_size=1", "trainer.limit_val_batches=0",
        "finetune.freeze=[post_quant_conv,decoder.stem,decoder.middle,decoder.stages]",
    ],
    "train": ["model.depth=2", "model.drop_path=0", "trainer.limit_val_batches=0"],
}  # fmt: skip


def readme_commands() -> list[str]:
    """The ``varkit`` lines of the bash blocks of the two sections, in order."""
    text = README.read_text()
    start = text.index(SECTIONS[0])
    end = text.index("\n## ", text.index(SECTIONS[1]) + 1)
    commands, in_block = [], False
    for line in text[start:end].splitlines():
        if line.startswith("```"):
            in_block = line.strip() == "```bash" if not in_block else False
            continue
        if in_block and line.strip() and not line.lstrip().startswith("#"):
            commands.append(line.strip())
    return commands


def _subcommand(words: list[str]) -> str:
    return " ".join(words[1:3]) if words[1] == "data" else words[1]


def _photo(name: str, crop: int) -> Image.Image:
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image is a test dependency (varkit[test])")
    pixels = np.asarray(getattr(skimage_data, name)())[..., :3].astype(np.uint8)
    h, w = pixels.shape[:2]
    return Image.fromarray(pixels[crop * h // 10 :, crop * w // 10 :])  # a different framing of the same photograph


def test_readme_command_list_is_what_the_sections_show() -> None:
    commands = readme_commands()
    assert all(c.startswith("varkit ") for c in commands), commands
    kinds = {_subcommand(shlex.split(c)) for c in commands}
    assert {"data pack", "train-tokenizer", "data tokenize", "train", "sample", "eval", "convert"} <= kinds


def test_every_readme_command_runs_on_real_photographs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for label, names in PHOTOS.items():
        for split, crop in (("train", 0), ("val", 1)):
            (tmp_path / "my_images" / split / label).mkdir(parents=True)
            for name in names:
                _photo(name, crop).save(tmp_path / "my_images" / split / label / f"{name}.jpg", quality=95)
    torch.save(official_vqvae_state({"V": 4096, "Cvae": 32, "ch": 160})[0], tmp_path / "vae_ch160v4096z32.pth")
    torch.save(official_var_state(2, 1024, 16), tmp_path / "var_d16.pth")
    (tmp_path / "class_map.json").write_text(json.dumps({"cat": 281, "space": 812}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VARKIT_HOME", raising=False)

    for command in readme_commands():
        words = shlex.split(command)
        kind = _subcommand(words)
        extra = TINY.get(kind, [])
        if "256" in command or "vqvae_f16" in command or "var_d16" in command:
            extra = extra + TINY_256.get(kind, [])
        assert main([*words[1:], *extra]) == 0, f"README command failed: {command} (+ {' '.join(extra)})"

    # what the sections promise
    grid = Image.open(tmp_path / "runs" / "var-mine" / "samples" / "grid.png")
    assert grid.size[0] > 0
    exported = json.loads((tmp_path / "runs" / "var-d16-mine" / "model" / "classes.json").read_text())
    assert sorted(exported) == ["cat", "microscopy", "space"]
    report = json.loads((tmp_path / "runs" / "var-d16-mine" / "init_report.json").read_text())
    assert report["classes"]["kept"] == {"cat": 281, "space": 812} and report["classes"]["new"] == ["microscopy"]
    pngs = sorted((tmp_path / "runs" / "var-d16-mine" / "samples" / "images").glob("*.png"))
    assert len(pngs) == 3 and Image.open(pngs[0]).size == (256, 256)  # one per class, at the released size
    assert (tmp_path / "runs" / "tokenizer-finetune" / "tokenizer" / "model.safetensors").is_file()
