"""Fine-tuning both stages: ``init_from`` (exports and converted weights), class remapping, freezing, LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from var_stage_data import make_tiny_stage, train_overrides

from varkit.checkpoint.generator import load_generator
from varkit.checkpoint.io import save_pretrained
from varkit.cli import main
from varkit.data.shards import read_classes, write_classes
from varkit.models.var import sample_images


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny trained transformer (10 demo classes) exported to ``runs/var-demo/model``."""
    root = tmp_path_factory.mktemp("finetune")
    stage = make_tiny_stage(root)
    assert main(["train", *train_overrides(stage, root)]) == 0
    return {**stage, "root": root, "model": root / "runs" / "var-demo" / "model"}


def _new_classes(base: dict[str, Path], folder: Path) -> Path:
    """A classes.json: four of the old classes (reordered) and six new ones — the token shards' labels 0..9."""
    old = read_classes(base["demo"])
    names = [old[3], old[0], old[7], old[5], *(f"new_{i}" for i in range(6))]
    write_classes(folder, names)
    return folder / "classes.json"


def _finetune(base: dict[str, Path], name: str, *extra: str) -> int:
    overrides = train_overrides(base, base["root"], f"name={name}", f"init_from={base['model']}", *extra)
    return main(["train", *overrides])


def test_finetune_remaps_classes_freezes_blocks_and_exports_new_names(base: dict[str, Path], tmp_path: Path) -> None:
    classes = _new_classes(base, tmp_path)
    assert _finetune(base, "ft-frozen", f"export.classes={classes}", "finetune.freeze_blocks=1") == 0
    run = base["root"] / "runs" / "ft-frozen"
    report = json.loads((run / "init_report.json").read_text())
    old = read_classes(base["demo"])
    assert report["classes"]["kept"] == {old[3]: 3, old[0]: 0, old[7]: 7, old[5]: 5}
    assert report["classes"]["new"] == [f"new_{i}" for i in range(6)]
    assert report["initialized"] == [] and report["dropped"] == [] and len(report["loaded"]) > 10
    assert read_classes(run / "model") == read_classes(classes)  # the export records the new class names
    source, tuned = load_file(base["model"] / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    for name in source:
        if name.startswith("blocks.0."):
            assert torch.equal(source[name], tuned[name]), name  # frozen: bit-identical
    assert not torch.equal(source["blocks.1.mlp.fc1.weight"], tuned["blocks.1.mlp.fc1.weight"])  # trained
    # the optimiser never saw the frozen block
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    optimised = sum(len(group["params"]) for group in checkpoint["optimizer_states"][0]["param_groups"])
    total = len([k for k in checkpoint["state_dict"]])
    frozen = len([k for k in checkpoint["state_dict"] if k.startswith("model.blocks.0.")])
    assert optimised == total - frozen


def test_lora_finetune_trains_adapters_and_exports_plain_weights(base: dict[str, Path]) -> None:
    assert _finetune(base, "ft-lora", "finetune.lora.rank=4", "finetune.lora.also_train=[]") == 0
    run = base["root"] / "runs" / "ft-lora"
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    lora_b = [k for k in state if "lora_B" in k]
    assert lora_b and all(state[k].abs().sum() > 0 for k in lora_b)  # B starts at zero: the adapters trained
    source = load_file(base["model"] / "model.safetensors")
    for name, value in source.items():  # every base weight is frozen
        key = f"model.{name}"
        base_key = key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        stored = state[key] if key in state else state[base_key]
        assert torch.equal(stored, value), name
    exported = load_file(run / "model" / "model.safetensors")
    assert set(exported) == set(source)  # merged: no adapter tensors, plain VAR names
    assert not torch.equal(exported["blocks.0.attention.qkv.weight"], source["blocks.0.attention.qkv.weight"])
    var, vqvae, _ = load_generator(run / "model")
    images = sample_images(var, vqvae, torch.tensor([0, 1]), cfg=1.5, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 16, 16)


def test_shape_mismatch_is_one_sentence_and_nothing_trains(
    base: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    assert _finetune(base, "ft-bad", "model.width=96", "model.num_heads=2") == 2
    err = capsys.readouterr().err.strip()
    assert "has shape" in err and "in the checkpoint but" in err and "(" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert not (base["root"] / "runs" / "ft-bad" / "checkpoints").exists()


def test_bad_class_map_is_refused(base: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"red_circle": "no_such_class"}))
    assert _finetune(base, "ft-badmap", f"finetune.class_map={mapping}") == 2
    assert "class_map maps 'red_circle' to 'no_such_class'" in capsys.readouterr().err


def test_init_from_is_ignored_when_the_run_resumes(base: dict[str, Path]) -> None:
    assert _finetune(base, "ft-resume", "trainer.max_steps=2") == 0
    log = base["root"] / "runs" / "ft-resume" / "cli.log"
    assert "ignored: resuming" not in log.read_text()
    assert _finetune(base, "ft-resume", "trainer.max_steps=4") == 0
    assert "init_from=" in log.read_text() and "ignored: resuming this run from its own last.ckpt" in log.read_text()


def test_tokenizer_decoder_only_finetune_keeps_the_token_space(base: dict[str, Path]) -> None:
    root = base["root"]
    overrides = [
        "tokenizer=vqvae_tiny",
        "schedule.sizes=[1,2,3,4]",
        "data.image_size=16",
        "data.batch_size=4",
        "data.shuffle_buffer=8",
        f"data.train_urls={base['demo'] / 'train'}",
        f"data.val_urls={base['demo'] / 'val'}",
        "trainer=debug",
        "optim.warmup_steps=1",
        f"paths.root={root}",
        "name=tok-ft",
        f"init_from={base['tokenizer']}",
        "finetune.decoder_only=true",
        "optim.lr=1e-3",
    ]
    assert main(["train-tokenizer", *overrides]) == 0
    before, after = (
        load_file(base["tokenizer"] / "model.safetensors"),
        load_file(root / "runs" / "tok-ft" / "tokenizer" / "model.safetensors"),
    )
    for name in before:
        if name.startswith(("encoder.", "quant_conv.", "quantizer.")):
            assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["decoder.head_conv.weight"], after["decoder.head_conv.weight"])
    report = json.loads((root / "runs" / "tok-ft" / "init_report.json").read_text())
    assert report["kind"] == "vqvae" and not report["initialized"]


def test_initialize_from_converted_unnamed_classes_by_index_and_map(tmp_path: Path) -> None:
    """Converted ImageNet weights have unnamed classes: index names and a CSV map select rows; null row kept."""
    from varkit.checkpoint.init import initialize_from
    from varkit.errors import ConfigError
    from varkit.models.var import VAR

    shape = {"depth": 1, "width": 32, "num_heads": 2, "codebook_size": 8, "code_dim": 4, "scales": [1, 2]}
    torch.manual_seed(0)
    old = VAR(num_classes=6, **shape)
    save_pretrained(old, tmp_path / "pair" / "var")  # the layout of `varkit convert` on an official pair
    (tmp_path / "map.csv").write_text("new,old\ntabby,4\n")
    new = VAR(num_classes=3, **shape)
    report = initialize_from(new, tmp_path / "pair", classes=["2", "tabby", "novel"], class_map=tmp_path / "map.csv")
    rows, old_rows = new.class_embedding.weight, old.class_embedding.weight
    torch.testing.assert_close(rows[0], old_rows[2])
    torch.testing.assert_close(rows[1], old_rows[4])
    torch.testing.assert_close(rows[2], old_rows[:6].mean(0))  # a new class: the mean of the old class rows
    torch.testing.assert_close(rows[3], old_rows[6])  # the null class
    assert report.classes_new == ["novel"] and report.classes_dropped == ["0", "1", "3", "5"]
    torch.testing.assert_close(new.head.weight, old.head.weight)
    with pytest.raises(ConfigError, match=r"parameter class_embedding.weight|blocks.0"):
        initialize_from(VAR(num_classes=6, **{**shape, "width": 64}), tmp_path / "pair")
    with pytest.raises(ConfigError, match="holds no vqvae model"):
        from varkit.models.vqvae import vqvae_preset

        initialize_from(vqvae_preset("vqvae_tiny"), tmp_path / "pair")
