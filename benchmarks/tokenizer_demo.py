"""The demo tokenizer's quality versus steps, with and without dead-code restart (issue: Tokenizer stage).

Runs the real command ``varkit train-tokenizer experiment=tokenizer_demo`` once per variant (a subprocess, in a
scratch directory holding freshly generated demo data), reads the CSV logger's validation rows and prints one
table: PSNR, SSIM and per-scale code usage at each validation step, and the wall time of each run.

    python benchmarks/tokenizer_demo.py                    # restart vs no restart, the preset's 2000 steps
    python benchmarks/tokenizer_demo.py --steps 600 --keep /tmp/tok

Per-scale usage is the fraction of the codebook hit at that scale on the validation images (scale 0 has one token
per image, so 64 validation images can use at most 64 codes). Validation always reads the same images.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {"restart": ["codebook.restart=true"], "no restart": ["codebook.restart=false"]}


def read_rows(root: Path, run_name: str) -> list[dict[str, str]]:
    with (root / "runs" / run_name / "csv" / "metrics.csv").open() as handle:
        return [row for row in csv.DictReader(handle) if row.get("val/psnr")]


def run_variant(
    root: Path, name: str, extra: list[str], steps: int | None, reuse: bool
) -> tuple[float | None, list[dict[str, str]]]:
    run_name = name.replace(" ", "-")
    if reuse and (root / "runs" / run_name / "tokenizer").is_dir():
        return None, read_rows(root, run_name)  # a finished run: report it, do not time it again
    command = [
        sys.executable, "-m", "varkit", "train-tokenizer", "experiment=tokenizer_demo", f"paths.root={root}",
        f"name={run_name}", "logger=csv", "trainer.enable_progress_bar=false", *extra,
    ]  # fmt: skip
    if steps:
        command.append(f"trainer.max_steps={steps}")
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return seconds, read_rows(root, run_name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="override trainer.max_steps (default: the preset's)")
    parser.add_argument("--keep", type=Path, default=None, help="work in this directory and keep the runs")
    parser.add_argument("--reuse", action="store_true", help="with --keep: report finished runs instead of rerunning")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "data" / "demo" / "info.json").is_file():
            subprocess.run([sys.executable, "-m", "varkit", "data", "demo", str(root / "data" / "demo")], check=True)
        results = {name: run_variant(root, name, VARIANTS[name], args.steps, args.reuse) for name in args.variants}

    keys = {key for _, rows in results.values() for row in rows for key in row}
    scales = sorted(key for key in keys if key.startswith("val/codebook/usage_s"))
    scale_names = [key.rsplit("_", 1)[1] for key in scales]
    header = ["variant", "step", "PSNR dB", "SSIM", "usage all", *[f"usage {name}" for name in scale_names]]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, (_, rows) in results.items():
        for row in rows:
            cells = [name, str(int(row["step"]) + 1), f"{float(row['val/psnr']):.2f}", f"{float(row['val/ssim']):.3f}"]
            cells.append(f"{float(row['val/codebook/usage_all']):.2f}")
            cells += [f"{float(row[key]):.3f}" for key in scales]
            print("| " + " | ".join(cells) + " |")
    print()
    for name, (seconds, _) in results.items():
        if seconds is not None:
            print(f"{name}: {seconds:.0f} s wall for the whole command (startup, training, validation, export)")


if __name__ == "__main__":
    main()
