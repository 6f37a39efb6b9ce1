"""``varkit quickstart``: the whole VAR pipeline on the built-in demo data, in one command (about 10 min on 2 CPUs).

Runs the ordinary varkit commands one after the other, each as a subprocess of the same CLI (so every stage is
exactly what a user would run by hand, and its output directory can be inspected or resumed):

1. ``varkit data demo``            — coloured-shape images, 10 classes, as webdataset shards;
2. ``varkit train-tokenizer``      — the multi-scale VQ-VAE (demo preset);
3. ``varkit data tokenize``        — pre-tokenize the shards with it (the transformer then reads integers);
4. ``varkit train``                — the VAR transformer (demo preset) on the token shards;
5. ``varkit sample``               — a grid with one row per class.

Everything goes under ``--output`` (``data/``, ``runs/``); re-running resumes or skips finished stages.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HELP = "run the whole pipeline on the built-in demo data (data -> tokenizer -> tokens -> transformer -> samples)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="quickstart", help="folder for data/ and runs/ (default: ./quickstart)")
    parser.add_argument(
        "--tokenizer-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra override for `varkit train-tokenizer` (repeatable), e.g. quantizer=msfsq schedule=linear",
    )
    parser.add_argument(
        "--tokenizer-steps",
        type=int,
        default=None,
        help="tokenizer steps (default: the tokenizer_demo preset)",
    )
    parser.add_argument("--steps", type=int, default=900, help="transformer training steps")
    parser.add_argument(
        "--tokenizer-batch-size", type=int, default=None, help="tokenizer batch size (default: the preset's)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of the transformer stage")
    parser.add_argument("--train-per-class", type=int, default=400, help="demo training images per class")
    parser.add_argument("--val-per-class", type=int, default=20, help="demo validation images per class")
    parser.add_argument("--per-class", type=int, default=8, help="samples per class in the final grid")
    parser.add_argument("--cfg", type=float, default=2.0, help="guidance scale of the final grid")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trainer", default="cpu", help="trainer config of both stages (cpu, gpu, debug, ...)")
    parser.add_argument(
        "--precision",
        default="auto",
        help="training precision of both stages: auto (bf16-mixed where bf16 matmuls are faster than fp32, e.g. "
        "GPUs and AMX CPUs; else 32-true), 32-true, bf16-mixed",
    )
    parser.add_argument("--force", action="store_true", help="redo every stage even if its output exists")
    parser.add_argument(
        "overrides", nargs="*", help="extra Hydra overrides for `varkit train`, e.g. model.depth=4 optim.base_lr=2e-4"
    )


def _varkit(arguments: Sequence[str], log: Path) -> None:
    """Run ``varkit <arguments>`` in a subprocess; its output goes to ``log`` (and the tail to stderr on failure)."""
    command = [sys.executable, "-m", "varkit", *arguments]
    with log.open("w") as handle:
        handle.write(" ".join(command) + "\n")
        handle.flush()
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ}, check=False)
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(
            f"`varkit {' '.join(arguments[:2])} ...` failed (exit {result.returncode}); log {log}:\n{tail}"
        )


def fastest_precision() -> str:
    """``bf16-mixed`` where bf16 matrix products beat float32 (GPUs, CPUs with AMX), else ``32-true``.

    CPUs without bf16 units (AVX-512 without AMX/avx512_bf16) emulate bf16 and run it several times slower.
    """
    import torch

    if torch.cuda.is_available():
        return "bf16-mixed"
    timings = {}
    for dtype in (torch.float32, torch.bfloat16):
        left, right = torch.randn(512, 512, dtype=dtype), torch.randn(512, 512, dtype=dtype)
        left @ right
        start = time.perf_counter()
        for _ in range(8):
            left @ right
        timings[dtype] = time.perf_counter() - start
    return "bf16-mixed" if timings[torch.bfloat16] < 0.8 * timings[torch.float32] else "32-true"


def _children_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(args: argparse.Namespace) -> int:
    root = Path(args.output).resolve()
    data, runs = root / "data", root / "runs"
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    precision = fastest_precision() if args.precision == "auto" else args.precision
    print(f"training precision: {precision}", flush=True)
    common = [
        f"paths.root={root}",
        f"seed={args.seed}",
        f"trainer={args.trainer}",
        f"trainer.precision={precision}",
        "trainer.enable_progress_bar=false",
    ]
    tokenizer_dir = runs / "tokenizer-demo" / "tokenizer"
    model_dir = runs / "var-demo" / "model"
    stages: list[tuple[str, list[str], Path]] = [
        (
            "demo data",
            [
                "data",
                "demo",
                str(data / "demo"),
                "--train-per-class",
                str(args.train_per_class),
                "--val-per-class",
                str(args.val_per_class),
                "--seed",
                str(args.seed),
            ],
            data / "demo" / "classes.json",
        ),
        (
            "tokenizer",
            [
                "train-tokenizer",
                "experiment=tokenizer_demo",  # the tokenizer stage's own CPU demo preset
                *common,
                *([f"trainer.max_steps={args.tokenizer_steps}"] if args.tokenizer_steps else []),
                *([f"data.batch_size={args.tokenizer_batch_size}"] if args.tokenizer_batch_size else []),
                *args.tokenizer_override,
            ],
            tokenizer_dir / "config.json",
        ),
    ]
    for split, flip in (("train", ["--flip"]), ("val", [])):
        stages.append(
            (
                f"tokenize {split}",
                [
                    "data",
                    "tokenize",
                    "--tokenizer",
                    str(tokenizer_dir),
                    "--input",
                    str(data / "demo" / split),
                    "--output",
                    str(data / "demo_tokens" / split),
                    "--no-progress",
                    *flip,
                ],
                data / "demo_tokens" / split / "tokens.json",
            )
        )
    stages += [
        (
            "transformer",
            [
                "train",
                "experiment=quickstart",
                *common,
                f"trainer.max_steps={args.steps}",
                f"data.batch_size={args.batch_size}",
                f"tokenizer.path={tokenizer_dir}",
                f"export.classes={data / 'demo' / 'classes.json'}",
                *args.overrides,
            ],
            model_dir / "config.json",
        ),
        (
            "samples",
            [
                "sample",
                f"paths.root={root}",
                f"model_dir={model_dir}",
                f"per_class={args.per_class}",
                f"cfg={args.cfg}",
                f"seed={args.seed}",
                "upscale=4",
                "progress=false",
            ],
            runs / "var-demo" / "samples" / "grid.png",
        ),
    ]
    started = time.perf_counter()
    for index, (title, arguments, done) in enumerate(stages, start=1):
        if done.exists() and not args.force and title != "samples":
            print(f"[{index}/{len(stages)}] {title}: already done ({done})", flush=True)
            continue
        print(f"[{index}/{len(stages)}] {title}: varkit {' '.join(arguments[:2])} ...", flush=True)
        stage_start, cpu_start = time.perf_counter(), _children_cpu_seconds()
        _varkit(arguments, logs / f"{index}-{title.replace(' ', '-')}.log")
        wall, cpu = time.perf_counter() - stage_start, _children_cpu_seconds() - cpu_start
        print(f"      done in {wall:.0f} s (CPU time {cpu:.0f} s)", flush=True)
    grid = runs / "var-demo" / "samples" / "grid.png"
    print(f"quickstart finished in {time.perf_counter() - started:.0f} s")
    print(f"sample grid (one row per class): {grid}")
    print(f"per-step training grids: {runs / 'var-demo' / 'samples'}; logs: {logs}")
    return 0
