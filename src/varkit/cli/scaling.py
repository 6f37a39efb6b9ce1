"""``varkit scaling``: a scaling-law experiment on the demo tokens (VAR paper, Sec. 5 "Scaling laws").

Trains the transformer at several depths (width ``64 * depth``, ``depth`` heads of size 64, as the VAR family
does) with the same number of steps and batch size (``conf/experiment/scaling_demo.yaml``), then fits the
final validation loss against training compute ``C = 6 N D``: ``L = a * C^(-alpha)`` in log space, and writes

* ``<output>/scaling.png`` — loss vs compute with the fitted line, and loss vs parameters (log-log);
* ``<output>/scaling.json`` — the exponent ``alpha``, the Pearson ``r`` of the log-log points, every point.

Several ``--steps`` values also sweep the training budget (every depth x every budget). Each training is an
ordinary ``varkit train experiment=scaling_demo ...`` subprocess with its own run directory
``runs/scaling-d<depth>-s<steps>`` (a finished one is reused, an interrupted one resumes). The demo tokens must exist
(``varkit quickstart``, or ``--prepare`` to make them: demo images, a short tokenizer run, tokenization).

Examples::

    varkit scaling --prepare                            # depths 1 2 3 4, 300 steps each
    varkit scaling --depths 1 2 --steps 50 150 300      # depth x training budget
    varkit scaling --depths 2 4 6 --steps 1000 trainer=gpu
    varkit scaling --report-only                        # refit and replot finished runs
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HELP = "scaling-law experiment: train several depths on the demo tokens, fit loss = a * compute^-alpha, plot it"

logger = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=".", help="folder holding data/ and runs/ (default: .)")
    parser.add_argument("--output", default=None, help="where the plot and JSON go (default: <root>/runs/scaling)")
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3, 4], help="transformer depths")
    parser.add_argument("--width-per-depth", type=int, default=64, help="width = this * depth (default 64)")
    parser.add_argument("--head-size", type=int, default=64, help="heads = width / head size (default 64)")
    parser.add_argument(
        "--steps", type=int, nargs="+", default=[300], help="training steps; several values sweep the budget too"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of every run")
    parser.add_argument("--metric", default="val/ce", help="the loss to fit (a column of csv/metrics.csv)")
    parser.add_argument("--fit-constant", action="store_true", help="fit L = a C^-alpha + c (needs >= 3 runs)")
    parser.add_argument("--prepare", action="store_true", help="make the demo data, tokenizer and tokens if missing")
    parser.add_argument("--tokenizer-steps", type=int, default=300, help="tokenizer steps for --prepare")
    parser.add_argument("--report-only", action="store_true", help="do not train; fit and plot existing runs")
    parser.add_argument(
        "overrides", nargs="*", help="extra Hydra overrides for every `varkit train`, e.g. trainer=gpu optim.lr=1e-3"
    )


def _varkit(arguments: Sequence[str], log: Path) -> None:
    """``python -m varkit <arguments>`` with its output in ``log``; the log's tail is raised on failure."""
    command = [sys.executable, "-m", "varkit", *arguments]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        handle.write(" ".join(command) + "\n")
        handle.flush()
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ}, check=False)
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(
            f"`varkit {' '.join(arguments[:2])} ...` failed (exit {result.returncode}); log {log}:\n{tail}"
        )


def _prepare(root: Path, tokenizer_steps: int, batch_size: int, logs: Path) -> None:
    """Demo images, a short demo-tokenizer run and the token shards, each only if missing."""
    data, tokenizer = root / "data", root / "runs" / "tokenizer-demo" / "tokenizer"
    stages: list[tuple[str, list[str], Path]] = [
        ("demo data", ["data", "demo", str(data / "demo")], data / "demo" / "classes.json"),
        (
            "tokenizer",
            [
                "train-tokenizer",
                f"paths.root={root}",
                f"trainer.max_steps={tokenizer_steps}",
                f"data.batch_size={batch_size}",
                "trainer=cpu",
                "trainer.enable_progress_bar=false",
            ],
            tokenizer / "config.json",
        ),
    ]
    for split, flip in (("train", ["--flip"]), ("val", [])):
        arguments = [
            "data", "tokenize", "--tokenizer", str(tokenizer), "--input", str(data / "demo" / split),
            "--output", str(data / "demo_tokens" / split), "--no-progress", *flip,
        ]  # fmt: skip
        stages.append((f"tokenize {split}", arguments, data / "demo_tokens" / split / "tokens.json"))
    for title, arguments, done in stages:
        if done.exists():
            continue
        sys.stdout.write(f"prepare: {title} ...\n")
        sys.stdout.flush()
        _varkit(arguments, logs / f"prepare-{title.replace(' ', '-')}.log")


def run_name(depth: int, steps: int) -> str:
    """The run directory name (``runs/<name>``) of one depth and step budget."""
    return f"scaling-d{depth}-s{steps}"


def run_arguments(root: Path, depth: int, steps: int, args: argparse.Namespace) -> list[str]:
    """The ``varkit train`` arguments of the run at ``depth`` trained for ``steps``."""
    width = args.width_per_depth * depth
    if width % args.head_size:
        raise ValueError(f"width {width} is not a multiple of the head size {args.head_size}")
    return [
        "train", "experiment=scaling_demo", f"paths.root={root}", f"name={run_name(depth, steps)}",
        f"model.depth={depth}", f"model.width={width}", f"model.num_heads={width // args.head_size}",
        f"trainer.max_steps={steps}", f"data.batch_size={args.batch_size}",
        f"export.classes={root / 'data' / 'demo' / 'classes.json'}", *args.overrides,
    ]  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from varkit.errors import ConfigError
    from varkit.experiments.scaling import collect_run, fit_power_law, plot_scaling, write_report

    root = Path(args.root).resolve()
    output = Path(args.output).resolve() if args.output else root / "runs" / "scaling"
    logs = output / "logs"
    if not args.report_only:
        if args.prepare:
            _prepare(root, args.tokenizer_steps, args.batch_size, logs)
        tokens = root / "data" / "demo_tokens" / "train" / "tokens.json"
        if not tokens.is_file() and not any("data." in o for o in args.overrides):
            raise ConfigError(f"no demo tokens at {tokens.parent}: run `varkit scaling --prepare` (or quickstart)")
        for depth in args.depths:
            for steps in args.steps:
                run_dir = root / "runs" / run_name(depth, steps)
                if (run_dir / "model" / "config.json").is_file():
                    sys.stdout.write(f"depth {depth}, {steps} steps: already trained ({run_dir})\n")
                    continue
                sys.stdout.write(f"depth {depth}, {steps} steps: varkit train ...\n")
                sys.stdout.flush()
                started = time.perf_counter()
                _varkit(run_arguments(root, depth, steps, args), logs / f"train-{run_name(depth, steps)}.log")
                sys.stdout.write(f"depth {depth}, {steps} steps: done in {time.perf_counter() - started:.0f} s\n")
    points = []
    for run_dir in (root / "runs" / run_name(d, s) for d in args.depths for s in args.steps):
        try:
            points.append(collect_run(run_dir, metric=args.metric))
        except (FileNotFoundError, ValueError, KeyError) as err:
            raise ConfigError(f"cannot read the finished run {run_dir}: {err}") from None
    points.sort(key=lambda p: p.compute)
    compute_fit = fit_power_law([p.compute for p in points], [p.loss for p in points], with_constant=args.fit_constant)
    parameter_fit = fit_power_law([p.parameters for p in points], [p.loss for p in points])
    plot = plot_scaling(points, compute_fit, output / "scaling.png")
    report = write_report(points, compute_fit, output / "scaling.json", parameter_fit=parameter_fit, metric=args.metric)
    sys.stdout.write("depth  steps  params      tokens        compute (FLOPs)  loss\n")
    for p in points:
        sys.stdout.write(
            f"{p.depth:5d}  {p.steps:5d}  {p.parameters:10,d}  {p.tokens:12,d}  {p.compute:15.3e}  {p.loss:.4f}\n"
        )
    sys.stdout.write(
        f"fit: L = {compute_fit.coefficient:.4g} * C^-{compute_fit.exponent:.4f}"
        + (f" + {compute_fit.constant:.4g}" if compute_fit.constant else "")
        + f"  (Pearson r of log-log points {compute_fit.pearson_r:.4f}, R^2 {compute_fit.r_squared:.4f})\n"
        f"plot: {plot}\nreport: {report}\n"
    )
    return 0
