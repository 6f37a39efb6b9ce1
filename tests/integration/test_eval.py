"""``varkit eval`` end to end on the demo data with small real networks (tiny VAR + VQ-VAE, `tiny` extractor)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from varkit.cli import main
from varkit.evaluation.npz import load_samples_npz, save_reference_npz
from varkit.evaluation.shard_images import iter_shard_images


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from varkit.data.demo import generate_demo

    out = tmp_path_factory.mktemp("demo")
    generate_demo(out, image_size=16, train_per_class=1, val_per_class=8, train_shards=1, val_shards=2)
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from varkit.checkpoint.io import save_pretrained
    from varkit.models.var import VAR
    from varkit.models.vqvae import vqvae_preset

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("checkpoints")
    save_pretrained(vqvae_preset("vqvae_tiny"), out / "vqvae")
    save_pretrained(VAR.from_preset("var_tiny"), out / "var")
    return out / "var", out / "vqvae"


def _eval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *overrides: str) -> tuple[int, dict, str]:
    monkeypatch.setenv("VARKIT_HOME", str(tmp_path))
    run_dir = tmp_path / "run"
    code = main(["eval", f"hydra.run.dir={run_dir}", "device=cpu", "reference.image_size=16", *overrides])
    result = json.loads((run_dir / "eval.json").read_text()) if (run_dir / "eval.json").is_file() else {}
    table = (run_dir / "table.md").read_text() if (run_dir / "table.md").is_file() else ""
    return code, result, table


@pytest.mark.slow
def test_eval_generates_from_checkpoints_and_renders_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_dir: Path, checkpoints: tuple[Path, Path], capsys
) -> None:
    var_dir, vqvae_dir = checkpoints
    code, result, table = _eval(
        tmp_path,
        monkeypatch,
        f"checkpoint.var={var_dir}",
        f"checkpoint.vqvae={vqvae_dir}",
        f"reference.path={demo_dir / 'val'}",
        "generate.per_class=2",
        "generate.batch_size=10",
        "metrics.kid_subsets=10",
        "evaluator=tiny_demo",
        f"evaluator.fit_on={demo_dir / 'val'}",
        "table.model=varkit-tiny",
        "table.time_baseline=varkit-tiny",
    )
    assert code == 0
    metrics, timing = result["metrics"], result["timing"]
    assert metrics["num_samples"] == 20 and metrics["num_reference"] == 80
    assert metrics["fid"] > 0 and metrics["inception_score"] >= 1.0
    assert metrics["kid"] is not None and 0.0 <= metrics["precision"] <= 1.0 and 0.0 <= metrics["recall"] <= 1.0
    assert timing["num_images"] == 20 and timing["seconds_per_image"] > 0 and timing["images_per_second"] > 0
    assert timing["settings"]["batch_size"] == 10 and timing["settings"]["cfg"] == 1.5
    assert result["extractor"].startswith("tiny:") and "+head-" in result["extractor"]
    # the paper's rows, then ours, timed relative to itself
    assert "| VAR | VAR-d36 | 2.63 | — | 303.2 | 1 |" in table  # the paper reports no sFID
    row = f"| VAR | varkit-tiny | {metrics['fid']:.2f} | {metrics['sfid']:.2f} | {metrics['inception_score']:.1f} | 1 |"
    assert row in table
    # sFID from the tiny extractor's spatial output; classifier accuracy of the requested classes, and its ceiling
    assert metrics["sfid"] > 0 and 0.0 <= metrics["classifier_accuracy"] <= 1.0
    assert metrics["reference_accuracy"] == 1.0  # the head was fitted on these very reference images
    assert timing["settings"]["world_size"] == 1 and timing["chunks"] == 1
    assert (tmp_path / "run" / "shares" / "chunk-000000.npz").is_file()
    samples = load_samples_npz(tmp_path / "run" / "samples.npz")
    assert samples.shape == (20, 16, 16, 3) and samples.dtype == np.uint8
    assert "s/image" in capsys.readouterr().out
    # reference statistics were cached: a second run finds them
    assert len(list((tmp_path / "data" / "eval_cache").glob("reference-*.npz"))) == 1


def test_eval_of_the_reference_images_themselves_gives_zero_fid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_dir: Path
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    images = list(iter_shard_images(sorted(str(p) for p in (demo_dir / "val").glob("*.tar")), 16))
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    code, result, table = _eval(
        tmp_path,
        monkeypatch,
        "samples.source=folder",
        f"samples.path={folder}",
        f"reference.path={demo_dir / 'val'}",
        "literature=none",
        "metrics.kid_subsets=5",
    )
    assert code == 0
    metrics = result["metrics"]
    assert metrics["fid"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["precision"] == 1.0 and metrics["recall"] == 1.0 and metrics["sfid"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["classifier_accuracy"] is None  # images from a folder: no requested classes
    # (KID is not ~0 here: its unbiased estimator assumes two independent samples, not one set twice)
    assert result["timing"] is None and table.startswith(
        "| Type | Model | FID↓ | sFID↓ | IS↑ | Time |\n|---|---|---|---|---|---|\n| VAR"
    )


def test_eval_reads_adm_npz_samples_against_a_reference_npz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from varkit.evaluation import TinyExtractor, gaussian_statistics

    rng = np.random.default_rng(0)
    samples = rng.integers(0, 256, size=(12, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "samples.npz", arr_0=samples)
    extractor = TinyExtractor()
    features = rng.normal(size=(30, extractor.feature_dim))
    mu, sigma = gaussian_statistics(features)
    save_reference_npz(tmp_path / "ref.npz", mu=mu, sigma=sigma, extractor=extractor.fingerprint)
    # an earlier run's result, merged into the table as another measured row and used as the time baseline
    earlier = {
        "table_row": {"type": "AR", "model": "earlier", "fid": 9.0, "inception_score": 9.0, "seconds_per_image": 2}
    }
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    code, result, table = _eval(
        tmp_path,
        monkeypatch,
        "samples.source=npz",
        f"samples.path={tmp_path / 'samples.npz'}",
        "reference.source=npz",
        f"reference.path={tmp_path / 'ref.npz'}",
        f"table.include=[{tmp_path / 'earlier.json'}]",
        "table.time_baseline=earlier",
    )
    assert code == 0
    metrics = result["metrics"]
    assert metrics["num_samples"] == 12 and metrics["fid"] > 0
    assert metrics["kid"] is None and metrics["notes"]  # mu/sigma only: no per-image reference features
    assert "| AR | earlier | 9.00 | 9.0 | 1 |" in table
    assert "| VAR | VAR-d36 | 2.63 | 303.2 | 1 |" in table  # literature times are kept as published
    assert f"| VAR | varkit | {metrics['fid']:.2f} |" in table  # no timing for given images: Time "—"
    assert table.split("| VAR | varkit |")[1].split("\n")[0].endswith("| — |")


def test_eval_without_checkpoints_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    code, _, _ = _eval(tmp_path, monkeypatch)
    assert code == 2
    assert "needs checkpoint.var and checkpoint.vqvae" in capsys.readouterr().err


def test_sample_quality_callback_logs_fid_every_n_steps(demo_dir: Path, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from varkit.lit.eval_callback import SampleQuality
    from varkit.lit.var_module import VARModule
    from varkit.models.var_presets import var_preset
    from varkit.models.vqvae import vqvae_preset

    torch.manual_seed(0)
    module = VARModule(model=var_preset("var_tiny"), tokenizer=vqvae_preset("vqvae_tiny"))

    class RecordingLogger:
        def __init__(self) -> None:
            self.records: list[tuple[int, dict]] = []

        def log_metrics(self, metrics: dict, step: int) -> None:
            self.records.append((step, metrics))

    recorder = RecordingLogger()
    trainer = SimpleNamespace(global_step=3, loggers=[recorder], callbacks=[])
    callback = SampleQuality(
        reference=str(demo_dir / "val"), every_n_steps=4, classes=[0, 1, 2], per_class=4, cache_dir=str(tmp_path)
    )
    callback.on_train_batch_end(trainer, module)
    assert recorder.records == []  # not a multiple of every_n_steps
    trainer.global_step = 4
    callback.on_train_batch_end(trainer, module)
    callback.on_train_end(trainer, module)  # same step: not evaluated twice
    assert len(recorder.records) == 1
    step, metrics = recorder.records[0]
    assert step == 4 and metrics["eval/fid"] > 0 and metrics["eval/inception_score"] >= 1.0
    assert module.model.training  # sampling restored the training mode


def test_tiny_extractor_fitted_on_labelled_shards_gives_a_meaningful_inception_score(demo_dir: Path) -> None:
    from varkit.evaluation import TinyExtractor, extract_features, inception_score
    from varkit.evaluation.shard_images import image_batches

    urls = sorted(str(p) for p in (demo_dir / "val").glob("*.tar"))
    fitted = TinyExtractor(fit_on=urls)
    assert fitted.fingerprint != TinyExtractor().fingerprint
    real = np.stack(list(iter_shard_images(urls, 16)))
    noise = np.random.default_rng(0).integers(0, 256, size=real.shape, dtype=np.uint8)
    scores = {}
    for name, images in (("real", real), ("noise", noise)):
        _, logits = extract_features(fitted, image_batches(iter(images), 64))
        scores[name] = inception_score(logits.numpy(), splits=1).mean
    # 10 equally frequent, recognisable classes: close to the maximum of 10; noise: one blurred guess
    assert scores["real"] > 5.0 > 2.0 > scores["noise"]
