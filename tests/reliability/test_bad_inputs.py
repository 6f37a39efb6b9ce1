"""Table of bad inputs across every command: each is exit code 2, one ``varkit: error:`` sentence naming the
problem, no traceback, and nothing written, changed or deleted (checked on a snapshot of the whole test folder).

Commands run in-process (``varkit.cli.main``); cases are built from a context of prepared paths so one tiny stage
and one short trained run serve the whole table.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from .conftest import run_varkit, snapshot, train_args

CUDA = torch.cuda.is_available()


@dataclass(frozen=True)
class Case:
    id: str
    args: Callable[[dict], list[str]]
    message: str  # must appear in the one error sentence
    needs_no_cuda: bool = False


def _train(*extra: str) -> Callable[[dict], list[str]]:
    return lambda c: train_args(c["stage"], c["tmp"], *extra)


def _tok(*extra: str) -> Callable[[dict], list[str]]:
    return lambda c: [
        "train-tokenizer",
        f"paths.root={c['tmp']}",
        "tokenizer=vqvae_tiny",
        "trainer=debug",
        f"data.train_urls={c['stage']['demo'] / 'train'}",
        f"data.val_urls={c['stage']['demo'] / 'val'}",
        *extra,
    ]


def _sample(*extra: str) -> Callable[[dict], list[str]]:
    return lambda c: ["sample", f"model_dir={c['model']}", f"output={c['tmp'] / 'samples'}", *extra]


def _fmt(template: str) -> Callable[[dict], list[str]]:
    """Arguments from a template over the context, e.g. ``"{tmp}/x"`` (split on spaces)."""
    return lambda c: [part.format(**c) for part in template.split(" ")]


CASES: list[Case] = [
    # -- train: numbers (types and ranges), named by key
    Case("train-batch-string", _train("data.batch_size=abc"), "data.batch_size='abc'"),
    Case("train-batch-zero", _train("data.batch_size=0"), "data.batch_size=0"),
    Case("train-batch-negative", _train("data.batch_size=-4"), "data.batch_size=-4"),
    Case("train-val-batch-zero", _train("data.val_batch_size=0"), "data.val_batch_size=0"),
    Case("train-lr-negative", _train("optim.lr=-1e-4"), "optim.lr=-0.0001"),
    Case("train-base-lr-zero", _train("optim.base_lr=0"), "optim.base_lr=0"),
    Case("train-weight-decay-negative", _train("optim.weight_decay=-0.1"), "optim.weight_decay=-0.1"),
    Case("train-betas-string", _train("optim.warmup_fraction=lots"), "optim.warmup_fraction='lots'"),
    Case("train-depth-zero", _train("model.depth=0"), "model.depth=0"),
    Case("train-width-zero", _train("model.width=0"), "model.width=0"),
    Case("train-heads-not-dividing", _train("model.num_heads=3"), "model.num_heads=3 does not divide"),
    Case("train-classes-zero", _train("model.num_classes=0"), "model.num_classes=0"),
    Case("train-class-dropout", _train("model.class_dropout=1.5"), "model.class_dropout=1.5"),
    Case("train-max-steps-zero", _train("trainer.max_steps=0"), "trainer.max_steps=0"),
    Case("train-max-steps-string", _train("trainer.max_steps=ten"), "trainer.max_steps='ten'"),
    Case("train-workers-negative", _train("data.num_workers=-1"), "data.num_workers=-1"),
    Case("train-skip-fraction", _train("data.max_skipped_fraction=2"), "data.max_skipped_fraction=2"),
    Case("train-seed-string", _train("seed=abc"), "seed='abc'"),
    Case("train-nan-lr", _train("optim.lr=nan"), "optim.lr=nan"),
    Case("train-gpu-missing", _train("trainer.accelerator=gpu"), "no CUDA GPU", needs_no_cuda=True),
    Case("train-devices-zero", _train("trainer.devices=0"), "trainer.devices=0"),
    Case("train-precision-unknown", _train("trainer.precision=17"), "trainer.precision=17"),
    Case("train-strategy-unknown", _train("trainer.strategy=nosuch"), "trainer.strategy='nosuch'"),
    Case("train-bool-typo", _train("data.hflip=maybe"), "data.hflip='maybe'"),
    Case("train-lr-schedule-unknown", _train("optim.schedule=nosuch"), "optim.schedule='nosuch'"),
    Case("train-betas-short", _train("optim.betas=[0.9]"), "optim.betas=[0.9]"),
    # -- train: data
    Case("train-shard-missing", _train("data.train_urls={tmp}/nowhere/shard-000000.tar"), "does not exist"),
    Case("train-glob-no-match", _train("data.train_urls={tokens}/train/shard-9*.tar"), "matches no file"),
    Case(
        "train-brace-no-match",
        _train("data.train_urls='{tokens}/train/shard-{{000007..000009}}.tar'"),
        "does not exist (and 2 more",
    ),
    Case("train-brace-unquoted", _train("data.train_urls={tokens}/train/shard-{{000000..000001}}.tar"), "quote"),
    Case("train-empty-folder", _train("data.train_urls={empty}"), "holds no .tar shards"),
    Case("train-tokenizer-missing", _train("tokenizer.path={tmp}/no-tokenizer"), "no tokenizer found"),
    Case("train-tokenizer-is-file", _train("tokenizer.path={afile}"), "no tokenizer found"),
    # -- train: outputs
    Case("train-export-dir-file", _train("export.dir={afile}"), "export.dir="),
    Case("train-checkpoint-under-file", _train("callbacks.model_checkpoint.dirpath={afile}/ckpt"), "is a file"),
    Case("train-root-is-file", _train("paths.root={afile}"), "is a file"),
    # -- train: hostile / unknown config
    Case("train-unknown-key", _train("trainer.max_stepz=3"), "max_stepz"),
    Case("train-unknown-model", _train("model=var_d999"), "model/var_d999"),
    Case("train-target-os-system", _train("logger.csv._target_=os.system"), "is not allowed"),
    # -- train-tokenizer
    Case("tokenizer-codebook-zero", _tok("tokenizer.codebook_size=0"), "tokenizer.codebook_size=0"),
    Case("tokenizer-quantizer-codebook-zero", _tok("quantizer.codebook_size=0"), "quantizer.codebook_size=0"),
    Case("tokenizer-lr-negative", _tok("optim.lr=-2e-4"), "optim.lr=-0.0002"),
    Case("tokenizer-image-size-zero", _tok("data.image_size=0"), "data.image_size=0"),
    Case("tokenizer-channels-string", _tok("tokenizer.base_channels=wide"), "tokenizer.base_channels='wide'"),
    # -- config / --cfg job report the same
    Case("config-depth-zero", _fmt("config train_var model.depth=0"), "model.depth=0"),
    Case("config-unknown", _fmt("config no_such_config"), "unknown config"),
    Case("cfg-job-batch-zero", _train("data.batch_size=0", "--cfg", "job"), "data.batch_size=0"),
    # -- sample
    Case("sample-batch-zero", _sample("batch_size=0"), "batch_size=0"),
    Case("sample-per-class-zero", _sample("per_class=0"), "per_class=0"),
    Case("sample-top-k-negative", _sample("top_k=-1"), "top_k"),
    Case("sample-top-p-above-one", _sample("top_p=1.5"), "top_p"),
    Case("sample-guidance-negative", _sample("cfg=-1"), "cfg"),
    Case("sample-temperature-zero", _sample("temperature=0"), "temperature"),
    Case("sample-cuda-missing", _sample("device=cuda"), "no CUDA GPU", needs_no_cuda=True),
    Case("sample-model-missing", _fmt("sample model_dir={tmp}/nomodel output={tmp}/s"), "model_dir="),
    Case("sample-output-is-file", _sample("output={afile}"), "is a file"),
    Case("sample-tokenizer-dir-missing", _sample("tokenizer_dir={tmp}/gone"), "tokenizer_dir="),
    # -- eval / edit
    Case("eval-batch-zero", _fmt("eval batch_size=0 paths.root={tmp}"), "batch_size=0"),
    Case("eval-per-class-zero", _fmt("eval generate.per_class=0 paths.root={tmp}"), "generate.per_class=0"),
    Case("eval-cuda-missing", _fmt("eval device=cuda paths.root={tmp}"), "no CUDA GPU", needs_no_cuda=True),
    Case("edit-source-missing", _fmt("edit model_dir={model} source={tmp}/nope.png output={tmp}/e"), "source="),
    Case("edit-samples-zero", _fmt("edit model_dir={model} source={afile} samples=0 output={tmp}/e"), "samples=0"),
    # -- data
    Case(
        "tokenize-empty-input",
        _fmt("data tokenize --tokenizer {tokenizer} --input {empty} --output {tmp}/t"),
        "no .tar",
    ),
    Case(
        "tokenize-missing-input", _fmt("data tokenize --tokenizer {tokenizer} --input {tmp}/no --output {tmp}/t"), "not"
    ),
    Case(
        "tokenize-all-corrupt",
        _fmt("data tokenize --tokenizer {tokenizer} --input {corrupt} --output {tmp}/t --no-progress"),
        "no readable image",
    ),
    Case("pack-labels-traversal", _fmt("data pack {flat} {tmp}/p --labels {traversal}"), "points outside"),
    Case("pack-output-is-file", _fmt("data pack {classdirs} {afile}"), "is a file"),
    Case("demo-output-is-file", _fmt("data demo {afile}"), "file exists"),
    # -- convert
    Case("convert-lightning-ckpt", _fmt("convert {ckpt} {tmp}/c"), "Lightning training checkpoint"),
    Case("convert-output-is-file", _fmt("convert {ckpt} {afile}"), "is a file"),
    Case("convert-truncated", _fmt("convert {truncated_pth} {tmp}/c"), "unreadable or truncated"),
    Case("convert-not-torch", _fmt("convert {afile} {tmp}/c"), "not a torch.save file"),
    Case("convert-missing", _fmt("convert {tmp}/none.pth {tmp}/c"), "does not exist"),
]


@pytest.fixture
def context(stage: dict[str, Path], trained_run: dict[str, Path], tmp_path: Path) -> dict:
    from PIL import Image

    work = tmp_path / "work"
    work.mkdir()
    afile = work / "a-file.txt"
    afile.write_text("not a directory\n")
    (work / "empty").mkdir()
    corrupt = work / "corrupt"
    corrupt.mkdir()
    with tarfile.open(corrupt / "shard-000000.tar", "w") as tar:
        for i in range(3):
            for ext, data in (("png", b"not an image"), ("cls", b"1")):
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    flat = work / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "a.png")
    traversal = work / "labels.csv"
    traversal.write_text("a.png,cat\n../../../etc/passwd,dog\n")
    classdirs = work / "classes"
    (classdirs / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(classdirs / "cat" / "a.png")
    ckpt = next((trained_run["run"] / "checkpoints").glob("last*.ckpt"))
    truncated = work / "truncated.pth"
    torch.save({"blocks.0.w": torch.zeros(64, 64)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    return {
        "stage": stage,
        "tmp": work,
        "afile": afile,
        "empty": work / "empty",
        "corrupt": corrupt,
        "flat": flat,
        "traversal": traversal,
        "classdirs": classdirs,
        "ckpt": ckpt,
        "truncated_pth": truncated,
        "tokens": stage["tokens"],
        "tokenizer": stage["tokenizer"],
        "model": trained_run["model"],
    }


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_sentence_and_nothing_is_written(
    case: Case, context: dict, trained_run: dict[str, Path], stage: dict[str, Path]
) -> None:
    if case.needs_no_cuda and CUDA:
        pytest.skip("this machine has a CUDA GPU: the missing-GPU message cannot appear")
    args = [_format(a, context) for a in case.args(context)]
    watched = [context["tmp"], trained_run["root"], stage["root"]]
    before = [snapshot(root) for root in watched]
    result = run_varkit(*args, cwd=context["tmp"])
    assert result.code == 2, (args, result.code, result.err[-2000:])
    assert "Traceback" not in result.err, result.err[-3000:]
    assert len(result.errors) == 1, result.err[-2000:]
    assert case.message in result.errors[0], result.errors[0]
    assert [snapshot(root) for root in watched] == before, "something was written, changed or deleted"


def _format(argument: str, context: dict) -> str:
    """Fill ``{key}`` placeholders of the context (``{{`` / ``}}`` stay literal braces)."""
    try:
        return argument.format(**{k: v for k, v in context.items() if not isinstance(v, dict)})
    except (KeyError, IndexError, ValueError):
        return argument


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


def test_moved_run_folder_still_samples(trained_run: dict[str, Path], tmp_path: Path) -> None:
    """The generator refers to its tokenizer relatively: moving the run and tokenizer together keeps it working;
    moving only the run falls back to the absolute path; deleting the tokenizer names ``tokenizer_dir=``."""
    from varkit.checkpoint.generator import load_generator
    from varkit.errors import ConfigError

    reference = json.loads((trained_run["model"] / "tokenizer.json").read_text())
    assert not Path(reference["path"]).is_absolute()
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(trained_run["model"], moved)
    load_generator(moved)  # absolute fallback
    (moved / "tokenizer.json").write_text(json.dumps({**reference, "absolute_path": str(tmp_path / "gone")}))
    with pytest.raises(ConfigError, match="tokenizer_dir="):
        load_generator(moved)
