"""``varkit.experiments.scaling``: the power-law fit recovers known laws; run dirs become points; plot and report."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from varkit.experiments.scaling import (
    ScalingPoint,
    collect_run,
    count_parameters,
    final_metric,
    fit_power_law,
    pearson,
    plot_scaling,
    tokens_per_sample,
    training_compute,
    write_report,
)


def test_fit_recovers_exponent_of_exact_power_law() -> None:
    compute = np.geomspace(1e12, 1e16, 6)
    loss = 40.0 * compute**-0.075
    fit = fit_power_law(compute, loss)
    assert fit.exponent == pytest.approx(0.075, rel=1e-9)
    assert fit.coefficient == pytest.approx(40.0, rel=1e-6)
    assert fit.constant == 0.0
    assert fit.pearson_r == pytest.approx(-1.0, abs=1e-12)
    assert fit.r_squared == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(fit.predict(compute), loss, rtol=1e-9)


def test_fit_recovers_exponent_from_noisy_points() -> None:
    generator = np.random.default_rng(0)
    compute = np.geomspace(1e10, 1e14, 12)
    loss = 12.0 * compute**-0.12 * np.exp(generator.normal(0.0, 0.01, compute.shape))
    fit = fit_power_law(compute, loss)
    assert fit.exponent == pytest.approx(0.12, abs=0.01)
    assert -1.0 < fit.pearson_r < -0.99
    # numpy's own least squares on the log-log points agrees
    slope, _ = np.polyfit(np.log(compute), np.log(loss), 1)
    assert fit.exponent == pytest.approx(-slope, rel=1e-9)
    assert fit.pearson_r == pytest.approx(np.corrcoef(np.log(compute), np.log(loss))[0, 1], rel=1e-9)


def test_fit_with_irreducible_constant() -> None:
    compute = np.geomspace(1e8, 1e14, 10)
    loss = 30.0 * compute**-0.2 + 1.5
    plain = fit_power_law(compute, loss)
    with_constant = fit_power_law(compute, loss, with_constant=True, grid_size=3000)
    assert with_constant.constant == pytest.approx(1.5, abs=0.01)
    assert with_constant.exponent == pytest.approx(0.2, abs=0.01)
    assert plain.exponent < 0.15  # a pure power law through a floor underestimates the exponent
    assert with_constant.r_squared > plain.r_squared


def test_fit_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        fit_power_law([1.0], [1.0])
    with pytest.raises(ValueError, match="at least 3"):
        fit_power_law([1.0, 2.0], [2.0, 1.0], with_constant=True)
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([1.0, -2.0], [2.0, 1.0])


def test_small_helpers() -> None:
    assert training_compute(2e6, 3e7) == 6 * 2e6 * 3e7
    assert tokens_per_sample([1, 2, 3, 4, 6, 8]) == 1 + 4 + 9 + 16 + 36 + 64
    assert tokens_per_sample([[1, 1], [2, 3]]) == 7
    assert math.isnan(pearson([1.0, 1.0], [2.0, 3.0]))
    assert pearson([1, 2, 3], [6, 4, 2]) == pytest.approx(-1.0)


def _fake_run(root: Path, depth: int, loss: float, steps: int = 10, batch: int = 4) -> Path:
    """A finished run directory as ``varkit train`` leaves it (only the files :func:`collect_run` reads)."""
    from safetensors.torch import save_file

    run = root / f"scaling-d{depth}"
    (run / "model").mkdir(parents=True)
    (run / ".hydra").mkdir()
    (run / "checkpoints").mkdir()
    (run / "csv").mkdir()
    width = 64 * depth
    save_file({"w": torch.zeros(width, width), "b": torch.zeros(depth)}, run / "model" / "model.safetensors")
    config = {"depth": depth, "width": width, "scales": [1, 2, 3]}
    (run / "model" / "config.json").write_text(json.dumps({"kind": "var", "config": config}))
    (run / ".hydra" / "config.yaml").write_text(
        yaml.safe_dump({"data": {"batch_size": batch}, "trainer": {"devices": 1, "accumulate_grad_batches": 2}})
    )
    torch.save({"global_step": steps}, run / "checkpoints" / "last.ckpt")
    with (run / "csv" / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "train/loss", "val/ce"])
        writer.writerow([5, 5.0, ""])
        writer.writerow([9, 4.0, loss + 1.0])
        writer.writerow([10, 3.9, ""])
        writer.writerow([10, "", loss])
    return run


def test_collect_run_reads_parameters_tokens_compute_and_final_loss(tmp_path: Path) -> None:
    run = _fake_run(tmp_path, depth=2, loss=3.25, steps=10, batch=4)
    point = collect_run(run)
    assert point.parameters == 128 * 128 + 2 == count_parameters(run / "model" / "model.safetensors")
    assert point.tokens == 10 * (4 * 2) * (1 + 4 + 9)  # steps * global batch (accumulation 2) * tokens/sample
    assert point.compute == pytest.approx(6 * point.parameters * point.tokens)
    assert (point.depth, point.width, point.steps, point.loss) == (2, 128, 10, 3.25)
    with pytest.raises(ValueError, match="no value for 'val/acc'"):
        final_metric(run / "csv" / "metrics.csv", "val/acc")


def test_plot_and_report(tmp_path: Path) -> None:
    points = [
        ScalingPoint(f"d{d}", d, 64 * d, 10**5 * d * d, 100, 10**6, 6e11 * d * d, 5.0 * d**-0.3) for d in (1, 2, 3, 4)
    ]
    fit = fit_power_law([p.compute for p in points], [p.loss for p in points])
    assert fit.exponent == pytest.approx(0.15, rel=1e-9)  # loss ~ d^-0.3 and compute ~ d^2
    png = plot_scaling(points, fit, tmp_path / "out" / "scaling.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(write_report(points, fit, tmp_path / "out" / "scaling.json").read_text())
    assert report["exponent"] == pytest.approx(0.15) and report["pearson_r"] == pytest.approx(-1.0)
    assert [p["depth"] for p in report["points"]] == [1, 2, 3, 4]
