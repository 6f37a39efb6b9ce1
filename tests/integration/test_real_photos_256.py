"""Real photographs at the released shapes, on CPU: ``vqvae_f16`` at 256 px and a ``var_d16``-wide transformer.

The photographs are scikit-image's bundled samples (``skimage.data``: they ship inside the wheel, nothing is
downloaded). The released weights are stood in for by random weights written in the *official* checkpoint format
and imported with ``varkit convert`` (tests/integration/official_format.py), so the path is exactly the one a user
takes with ``vae_ch160v4096z32.pth`` / ``var_d16.pth``:

pack (class folder, and a flat folder + CSV) at 256 px → convert → tokenizer fine-tune (decoder only) → tokenize →
transformer fine-tune with LoRA, and with frozen blocks (class remap onto ImageNet rows) → ``varkit sample`` at 256.

Time: the transformer keeps the width, heads, MLP ratio and scales of ``var_d16`` (1024 wide, 16 heads, 680 tokens,
4096 codes) but only **2 of its 16 blocks**, and the tokenizer fine-tune trains only the decoder's output layers
(``decoder.head_*``), so that backward stops there: at full depth a CPU step takes minutes. fp32 throughout
(``trainer=debug``), ~1 minute on an idle 2-core machine.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from official_format import official_var_state, official_vqvae_state
from PIL import Image
from safetensors.torch import load_file

from varkit.cli import main

pytestmark = pytest.mark.slow

PHOTOS = {"cat": ["chelsea", "cat"], "space": ["rocket", "astronaut"]}  # skimage.data sample photographs
FLAT = ["coffee", "immunohistochemistry"]
DEPTH = 2  # of var_d16's 16 blocks (time only; width/heads/scales are d16's)


def _photo(name: str) -> Image.Image:
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image is a test dependency (varkit[test])")
    pixels = np.asarray(getattr(skimage_data, name)())[..., :3]
    return Image.fromarray(pixels.astype(np.uint8))


def _losses(run: Path, key: str) -> list[float]:
    with (run / "csv" / "metrics.csv").open() as handle:
        return [float(row[key]) for row in csv.DictReader(handle) if row.get(key)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos256")
    for label, names in PHOTOS.items():
        (root / "photos" / label).mkdir(parents=True)
        for name in names:
            _photo(name).save(root / "photos" / label / f"{name}.jpg", quality=95)
    (root / "flat").mkdir()
    for name in FLAT:
        _photo(name).save(root / "flat" / f"{name}.png")
    (root / "flat" / "labels.csv").write_text("filename,label\n" + "".join(f"{n}.png,{n}\n" for n in FLAT))
    return root


def test_real_photos_at_256px_through_both_fine_tunes(photos: Path) -> None:
    root = photos
    assert main(["data", "pack", str(root / "photos"), str(root / "data/train"), "--resolution", "256",
                 "--format", "jpg", "--no-progress"]) == 0  # fmt: skip
    flat = ["--labels", str(root / "flat/labels.csv"), "--resolution", "256", "--format", "png", "--no-progress"]
    assert main(["data", "pack", str(root / "flat"), str(root / "data/flat"), *flat]) == 0

    # "released" weights, official format, converted as a user would
    official_vae, varkit_vae = official_vqvae_state({"V": 4096, "Cvae": 32, "ch": 160, "share_quant_resi": 4})
    torch.save(official_vae, root / "vae_ch160v4096z32.pth")
    torch.save(official_var_state(DEPTH, 1024, 16), root / "var_d16.pth")
    del official_vae
    assert main(["convert", str(root / "vae_ch160v4096z32.pth"), str(root / "weights/vqvae"), "--kind", "vqvae"]) == 0
    assert main(["convert", str(root / "var_d16.pth"), str(root / "weights/var")]) == 0

    # 1. tokenizer fine-tune from the converted release: decoder only (token space kept), output layers trained
    common = [f"paths.root={root}", "trainer=debug", "trainer.limit_val_batches=0", "logger=csv"]
    tokenizer_run = root / "runs" / "tok"
    assert main([
        "train-tokenizer", "experiment=finetune_tokenizer", "tokenizer=vqvae_f16", "schedule=var_256", "name=tok",
        f"init_from={root / 'weights/vqvae'}", "finetune.decoder_only=true",
        "finetune.freeze=[post_quant_conv,decoder.stem,decoder.middle,decoder.stages]",
        f"data.train_urls={root / 'data/flat'}", f"data.val_urls={root / 'data/flat'}", "data.image_size=256",
        "data.mid_reso=1.0", "data.batch_size=2", "data.hflip=false", "trainer.max_steps=3", "optim.lr=2e-3",
        "optim.warmup_steps=1", "callbacks.model_checkpoint.every_n_train_steps=3", *common,
    ]) == 0  # fmt: skip
    tuned = load_file(tokenizer_run / "tokenizer" / "model.safetensors")
    for name, value in varkit_vae.items():
        if name.startswith("decoder.head_"):
            assert not torch.equal(tuned[name], value), name
        else:
            assert torch.equal(tuned[name], value), name  # encoder, codebook, φ, decoder body: untouched
    pixel = _losses(tokenizer_run, "train/pixel_loss")  # the same two photographs at every step
    assert len(pixel) == 3 and pixel[-1] < pixel[0], pixel
    del varkit_vae, tuned

    # 2. tokenization at 256 px: 10 scales, 680 tokens per image
    assert main(["data", "tokenize", "--tokenizer", str(tokenizer_run / "tokenizer"), "--input",
                 str(root / "data/train"), "--output", str(root / "tokens/train"), "--mid-reso", "1.0",
                 "--batch-size", "4", "--no-progress"]) == 0  # fmt: skip
    info = json.loads((root / "tokens/train/tokens.json").read_text())
    assert [list(s) for s in info["scales"]] == [[s, s] for s in (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)]
    assert info["samples"] == 4

    # 3. transformer fine-tunes from converted weights: class names mapped onto ImageNet rows
    (root / "class_map.json").write_text(json.dumps({"cat": 281, "space": 812}))  # tabby cat, space shuttle
    source = load_file(root / "weights/var/model.safetensors")

    def finetune(name: str, *extra: str) -> Path:
        assert main([
            "train", "experiment=finetune_var", "model=var_d16", f"model.depth={DEPTH}", "model.drop_path=0",
            f"name={name}", f"init_from={root / 'weights/var'}", f"tokenizer.path={tokenizer_run / 'tokenizer'}",
            f"finetune.class_map={root / 'class_map.json'}", f"data.train_urls={root / 'tokens/train'}",
            f"data.val_urls={root / 'tokens/train'}", f"export.classes={root / 'data/train/classes.json'}",
            "data.batch_size=4", "data.shuffle_buffer=4", "data.hflip=false", "trainer.max_steps=3",
            "optim.lr=3e-3", "callbacks.sample_grid.every_n_steps=0", "callbacks.sample_grid.at_end=false",
            "callbacks.model_checkpoint.every_n_train_steps=3", *common, *extra,
        ]) == 0  # fmt: skip
        return root / "runs" / name

    lora = finetune("lora", "finetune.lora.rank=8")
    report = json.loads((lora / "init_report.json").read_text())
    assert report["classes"]["kept"] == {"cat": 281, "space": 812} and report["classes"]["checkpoint_classes"] == 1000
    losses = _losses(lora, "train/loss")  # the same four images at every step
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    state = torch.load(lora / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert all(state[k].abs().sum() > 0 for k in state if "lora_B" in k)  # adapters trained (B starts at 0)
    assert torch.equal(state["model.blocks.1.mlp.fc1.base_layer.weight"], source["blocks.1.mlp.fc1.weight"])
    exported = load_file(lora / "model" / "model.safetensors")
    assert set(exported) == set(source) and exported["class_embedding.weight"].shape == (3, 1024)
    assert not torch.equal(exported["blocks.0.attention.qkv.weight"], source["blocks.0.attention.qkv.weight"])

    frozen = finetune("frozen", "finetune.freeze_blocks=1")
    tuned = load_file(frozen / "model" / "model.safetensors")
    for name, value in source.items():
        if name.startswith("blocks.0."):
            assert torch.equal(tuned[name], value), name
    assert not torch.equal(tuned["blocks.1.mlp.fc2.weight"], source["blocks.1.mlp.fc2.weight"])
    losses = _losses(frozen, "train/loss")
    assert losses[-1] < losses[0], losses

    # 4. the LoRA export reloads and samples at 256 px with plain `varkit sample`
    assert main(["sample", f"model_dir={lora / 'model'}", "classes=[0]", "per_class=1", "device=cpu",
                 "precision=fp32", "progress=false", "grid=false", f"output={root / 'samples'}"]) == 0  # fmt: skip
    (png,) = sorted((root / "samples" / "images").glob("*.png"))
    assert Image.open(png).size == (256, 256)
