"""Scaling laws of the VAR transformer: final validation loss against parameters and training compute.

The VAR paper (Sec. 5, Fig. 5-6) reports power laws ``L = (beta * X)^alpha`` between the test loss and the model
size ``N`` or the training compute ``C``, with Pearson coefficients near -0.998 for the log-log points. This
module holds the pure parts of that experiment (``varkit scaling`` runs the trainings):

* :func:`training_compute` — ``C ~= 6 N D`` FLOPs (Kaplan et al. 2020: forward 2ND + backward 4ND), ``D`` the
  number of training tokens;
* :func:`fit_power_law` — ``L = a * C^(-alpha)`` (optionally ``+ c``, an irreducible loss) fitted by least
  squares in log space with numpy, and the Pearson ``r`` of ``(log C, log L)``;
* :func:`collect_run` — one :class:`ScalingPoint` from a finished ``varkit train`` run directory;
* :func:`plot_scaling` / :func:`write_report` — the PNG (matplotlib, Agg) and the JSON summary.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PowerLawFit",
    "ScalingPoint",
    "collect_run",
    "count_parameters",
    "final_metric",
    "fit_power_law",
    "pearson",
    "plot_scaling",
    "tokens_per_sample",
    "training_compute",
    "write_report",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScalingPoint:
    """One finished training run: its size, its training budget and its final validation loss."""

    name: str
    depth: int
    width: int
    parameters: int
    steps: int
    tokens: int
    compute: float
    loss: float


@dataclass(frozen=True)
class PowerLawFit:
    """``loss = coefficient * x ** (-exponent) + constant``, fitted on ``points`` (x, loss) pairs.

    ``pearson_r`` is the correlation of ``(log x, log loss)`` (negative when the loss falls with ``x``);
    ``r_squared`` is the fit's coefficient of determination in log-loss space.
    """

    exponent: float
    coefficient: float
    constant: float
    pearson_r: float
    r_squared: float
    points: int

    def predict(self, x: np.ndarray | float) -> np.ndarray:
        return self.coefficient * np.power(np.asarray(x, dtype=np.float64), -self.exponent) + self.constant


def training_compute(parameters: float, tokens: float) -> float:
    """Training FLOPs ``6 * N * D`` (2 per parameter per token forward, 4 backward).

    >>> training_compute(1e6, 2e6)
    12000000000000.0
    """
    return 6.0 * float(parameters) * float(tokens)


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson correlation coefficient of two equally long samples."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    xs, ys = xs - xs.mean(), ys - ys.mean()
    denominator = math.sqrt(float((xs * xs).sum() * (ys * ys).sum()))
    return float((xs * ys).sum() / denominator) if denominator > 0 else float("nan")


def _log_linear_fit(log_x: np.ndarray, log_y: np.ndarray) -> tuple[float, float, float]:
    """``(slope, intercept, residual sum of squares)`` of ``log_y ~ slope * log_x + intercept``."""
    design = np.stack([log_x, np.ones_like(log_x)], axis=1)
    (slope, intercept), *_ = np.linalg.lstsq(design, log_y, rcond=None)
    residual = log_y - (slope * log_x + intercept)
    return float(slope), float(intercept), float((residual * residual).sum())


def fit_power_law(
    x: Sequence[float] | np.ndarray,
    loss: Sequence[float] | np.ndarray,
    *,
    with_constant: bool = False,
    grid_size: int = 400,
) -> PowerLawFit:
    """Fit ``loss = a * x^(-alpha)`` (``+ c`` with ``with_constant``) by least squares on ``log loss``.

    Without the constant it is linear regression of ``log loss`` on ``log x``. With it, ``c`` is searched on a
    grid over ``[0, min(loss))`` (for each ``c``, ``log(loss - c)`` is linear in ``log x``) and the ``c`` whose
    prediction has the smallest squared error in ``log loss`` wins; needs at least 3 points.
    """
    x = np.asarray(x, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    if x.shape != loss.shape or x.ndim != 1:
        raise ValueError(f"x and loss must be 1-D and equally long, got {x.shape} and {loss.shape}")
    if len(x) < (3 if with_constant else 2):
        raise ValueError(f"need at least {3 if with_constant else 2} points to fit, got {len(x)}")
    if (x <= 0).any() or (loss <= 0).any():
        raise ValueError("a power law needs positive x and loss values")
    log_x, log_loss = np.log(x), np.log(loss)
    constant = 0.0
    slope, intercept, _ = _log_linear_fit(log_x, log_loss)
    if with_constant:
        best_error = float(((log_loss - (slope * log_x + intercept)) ** 2).sum())
        for candidate in np.linspace(0.0, loss.min(), grid_size, endpoint=False)[1:]:
            c_slope, c_intercept, _ = _log_linear_fit(log_x, np.log(loss - candidate))
            predicted = np.exp(c_intercept) * np.power(x, c_slope) + candidate
            error = float(((log_loss - np.log(predicted)) ** 2).sum())
            if error < best_error:
                best_error, constant, slope, intercept = error, float(candidate), c_slope, c_intercept
    fit = PowerLawFit(
        exponent=-slope,
        coefficient=math.exp(intercept),
        constant=constant,
        pearson_r=pearson(log_x, log_loss),
        r_squared=float("nan"),
        points=len(x),
    )
    residual = log_loss - np.log(fit.predict(x))
    spread = float(((log_loss - log_loss.mean()) ** 2).sum())
    r_squared = 1.0 - float((residual * residual).sum()) / spread if spread > 0 else float("nan")
    return PowerLawFit(**{**asdict(fit), "r_squared": r_squared})


def count_parameters(weights: str | Path) -> int:
    """Number of scalars in a ``.safetensors`` file (read from its header; no tensor is loaded)."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(weights), framework="np") as handle:
        for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
            total += int(np.prod(handle.get_slice(name).get_shape()))
    return total


def tokens_per_sample(scales: Sequence[Any]) -> int:
    """Tokens of one image's pyramid: ``sum h_k * w_k`` over scales given as sizes ``s`` or pairs ``(h, w)``."""
    total = 0
    for scale in scales:
        if isinstance(scale, (list, tuple)):
            total += int(scale[0]) * int(scale[1])
        else:
            total += int(scale) * int(scale)
    return total


def final_metric(metrics_csv: str | Path, key: str = "val/ce") -> float:
    """The last logged value of ``key`` in a Lightning ``CSVLogger`` ``metrics.csv``."""
    value = None
    with Path(metrics_csv).open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get(key) not in (None, ""):
                value = float(row[key])
    if value is None:
        raise ValueError(f"{metrics_csv} has no value for {key!r} (was validation run at the end?)")
    return value


def collect_run(run_dir: str | Path, *, metric: str = "val/ce") -> ScalingPoint:
    """A :class:`ScalingPoint` from a finished ``varkit train`` run directory.

    Reads the exported model (``model/config.json``, ``model/model.safetensors``: parameters, depth, width,
    scales), the final step from ``checkpoints/last.ckpt``, the batch size and devices from ``.hydra/config.yaml``
    and the final ``metric`` from ``csv/metrics.csv``. Tokens ``D = steps * global batch * tokens per sample``.
    """
    import yaml

    run = Path(run_dir)
    exported = json.loads((run / "model" / "config.json").read_text())["config"]
    cfg = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    last = run / "checkpoints" / "last.ckpt"
    if last.is_dir():  # a distributed (FSDP2) checkpoint: the trainer state lives in meta.pt
        last = last / "meta.pt"
    from varkit.safe_load import load_torch_file

    checkpoint = load_torch_file(last, what="training checkpoint")
    steps = int(checkpoint["global_step"])
    trainer = cfg.get("trainer", {})
    devices = trainer.get("devices", 1)
    devices = int(devices) if isinstance(devices, int) or str(devices).isdigit() else 1
    global_batch = int(cfg["data"]["batch_size"]) * devices * int(trainer.get("num_nodes", 1) or 1)
    global_batch *= int(trainer.get("accumulate_grad_batches", 1) or 1)
    scales = exported["scales"]
    if isinstance(scales, dict):
        scales = scales.get("sizes", [])
    tokens = steps * global_batch * tokens_per_sample(scales)
    parameters = count_parameters(run / "model" / "model.safetensors")
    return ScalingPoint(
        name=run.name,
        depth=int(exported["depth"]),
        width=int(exported["width"]),
        parameters=parameters,
        steps=steps,
        tokens=tokens,
        compute=training_compute(parameters, tokens),
        loss=final_metric(run / "csv" / "metrics.csv", metric),
    )


def plot_scaling(points: Sequence[ScalingPoint], compute_fit: PowerLawFit, path: str | Path) -> Path:
    """Log-log plots of loss against compute (with the fitted power law) and against parameters, as a PNG.

    Drawn on an Agg canvas directly (no ``pyplot``), so it works headless and leaves the user's backend alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter, FuncFormatter, LogLocator, NullFormatter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compute = np.array([p.compute for p in points])
    loss = np.array([p.loss for p in points])
    parameters = np.array([p.parameters for p in points])
    figure = Figure(figsize=(10, 4.2), dpi=120)
    FigureCanvasAgg(figure)  # render with Agg without touching pyplot's global backend
    left, right = figure.subplots(1, 2)
    line = np.geomspace(compute.min() / 1.5, compute.max() * 1.5, 100)
    left.loglog(compute, loss, "o", color="tab:blue", label="runs")
    label = f"fit: L = {compute_fit.coefficient:.3g} C^-{compute_fit.exponent:.3f}"
    if compute_fit.constant:
        label += f" + {compute_fit.constant:.3g}"
    left.loglog(line, compute_fit.predict(line), "--", color="tab:red", label=label)
    for point in points:
        tag = f"d{point.depth}/{point.steps}"
        left.annotate(tag, (point.compute, point.loss), textcoords="offset points", xytext=(4, 4), fontsize=7)
    left.set_xlabel("training compute C = 6 N D (FLOPs)")
    left.set_ylabel("final validation loss (cross-entropy)")
    left.set_title(f"loss vs compute  (alpha = {compute_fit.exponent:.3f}, Pearson r = {compute_fit.pearson_r:.3f})")
    left.legend(fontsize=8)
    left.grid(True, which="both", alpha=0.3)
    right.loglog(parameters, loss, "s", color="tab:green")
    for point in points:
        tag = f"d{point.depth}/{point.steps}"
        right.annotate(tag, (point.parameters, point.loss), textcoords="offset points", xytext=(4, 4), fontsize=7)
    right.set_xlabel("parameters N")
    right.set_title(f"loss vs parameters  (Pearson r = {pearson(np.log(parameters), np.log(loss)):.3f})")
    right.grid(True, which="both", alpha=0.3)
    for axes in (left, right):
        # losses span a narrow range: plain numbers on the y axis; 1-2-5 labels on x even within one decade
        axes.xaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.0e}"))
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.yaxis.set_major_formatter(FormatStrFormatter("%.3f"))
        axes.yaxis.set_minor_formatter(FormatStrFormatter("%.3f"))
        axes.title.set_fontsize(10)
    figure.tight_layout()
    figure.savefig(path)
    return path


def write_report(
    points: Sequence[ScalingPoint],
    compute_fit: PowerLawFit,
    path: str | Path,
    *,
    parameter_fit: PowerLawFit | None = None,
    metric: str = "val/ce",
) -> Path:
    """The JSON summary: the compute fit (exponent, coefficient, constant, Pearson r), optional parameter fit,
    and every point."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "metric": metric,
        "law": "L = coefficient * C^(-exponent) + constant, C = 6 N D",
        "exponent": compute_fit.exponent,
        "pearson_r": compute_fit.pearson_r,
        "compute_fit": asdict(compute_fit),
        "parameter_fit": asdict(parameter_fit) if parameter_fit is not None else None,
        "points": [asdict(p) for p in points],
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
