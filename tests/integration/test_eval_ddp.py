"""`varkit eval trainer=ddp_cpu`: two CPU processes (gloo) sample disjoint chunks; the ADM `samples.npz` and every
metric equal those of one process; a killed run resumes without re-sampling finished chunks. Real subprocesses (DDP
under pytest would re-run pytest per rank)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# one thread per process in every run: the images are then bit-identical whatever the number of processes
# (Lightning gives each DDP-CPU process cores // processes threads otherwise, and CPU kernels may round differently)
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
METRICS = ("fid", "sfid", "inception_score", "kid", "precision", "recall", "classifier_accuracy", "reference_accuracy")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from varkit.checkpoint.io import save_pretrained
    from varkit.data.demo import generate_demo
    from varkit.models.var import VAR
    from varkit.models.vqvae import vqvae_preset

    root = tmp_path_factory.mktemp("eval_ddp")
    generate_demo(root / "demo", image_size=16, train_per_class=1, val_per_class=4, train_shards=1, val_shards=1)
    torch.manual_seed(0)
    save_pretrained(vqvae_preset("vqvae_tiny"), root / "vqvae")
    save_pretrained(VAR.from_preset("var_tiny"), root / "var")
    return {"root": root, "var": root / "var", "vqvae": root / "vqvae", "val": root / "demo" / "val"}


def _eval(setup: dict[str, Path], run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = [
        f"hydra.run.dir={run_dir}",
        f"checkpoint.var={setup['var']}",
        f"checkpoint.vqvae={setup['vqvae']}",
        f"reference.path={setup['val']}",
        f"reference.cache_dir={setup['root'] / 'cache'}",
        "reference.image_size=16",
        "device=cpu",
        "evaluator=tiny_demo",
        f"evaluator.fit_on={setup['val']}",
        "generate.classes=[0,1,2,3,4]",
        "generate.per_class=4",  # 20 images
        "generate.chunk_size=4",  # 5 chunks: with 2 processes, rank 0 takes 3 and rank 1 takes 2
        "generate.batch_size=2",
        "generate.warmup=false",
        "metrics.kid_subsets=5",
        "literature=none",
        *overrides,
    ]
    result = subprocess.run(
        [sys.executable, "-m", "varkit", "eval", *args], env=ENV, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _sampled(result: subprocess.CompletedProcess) -> list[tuple[int, int]]:
    """(rank, chunk) of every chunk sampled in a run, from its log lines."""
    logs = result.stdout + result.stderr
    return sorted((int(r), int(c)) for r, c in re.findall(r"rank (\d+) sampled chunk (\d+) ", logs))


@pytest.mark.slow
@pytest.mark.ddp
def test_two_processes_give_the_samples_and_metrics_of_one_and_a_killed_run_resumes(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    single = _eval(setup, tmp_path / "one", "trainer=cpu")
    double = _eval(setup, tmp_path / "two", "trainer=ddp_cpu")
    assert _sampled(single) == [(0, c) for c in range(5)]
    # disjoint shares: rank r samples chunks r, r + 2, ...
    assert _sampled(double) == [(0, 0), (0, 2), (0, 4), (1, 1), (1, 3)]
    samples_one = (tmp_path / "one" / "samples.npz").read_bytes()
    assert samples_one == (tmp_path / "two" / "samples.npz").read_bytes()
    one = json.loads((tmp_path / "one" / "eval.json").read_text())
    two = json.loads((tmp_path / "two" / "eval.json").read_text())
    assert {k: one["metrics"][k] for k in METRICS} == {k: two["metrics"][k] for k in METRICS}
    assert one["metrics"]["num_samples"] == 20 and one["metrics"]["sfid"] > 0
    assert (one["timing"]["settings"]["world_size"], two["timing"]["settings"]["world_size"]) == (1, 2)

    # a run killed after 3 of 5 chunks (and in the middle of writing a 4th): only the 2 missing chunks are sampled
    shares = tmp_path / "two" / "shares"
    (shares / "chunk-000001.npz").unlink()
    (shares / "chunk-000004.npz").unlink()
    (shares / ".chunk-000004.npz.x1y2.tmp").write_bytes(b"half a chunk")
    kept = {name: (shares / name).stat().st_mtime_ns for name in ("chunk-000000.npz", "chunk-000002.npz")}
    (tmp_path / "two" / "samples.npz").unlink()
    resumed = _eval(setup, tmp_path / "two", "trainer=ddp_cpu")
    assert _sampled(resumed) == [(0, 4), (1, 1)]  # each chunk by its owner (chunk % 2), the others untouched
    assert {name: (shares / name).stat().st_mtime_ns for name in kept} == kept
    assert (tmp_path / "two" / "samples.npz").read_bytes() == samples_one
    again = json.loads((tmp_path / "two" / "eval.json").read_text())
    assert {k: again["metrics"][k] for k in METRICS} == {k: one["metrics"][k] for k in METRICS}
    assert again["timing"]["chunks_sampled_now"] == 2

    # chunks of other settings are never merged: a changed seed in the same directory is one clear error
    models = [f"checkpoint.var={setup['var']}", f"checkpoint.vqvae={setup['vqvae']}", f"reference.path={setup['val']}"]
    plan = ["generate.classes=[0,1,2,3,4]", "generate.per_class=4", "generate.chunk_size=4", "generate.batch_size=2"]
    other = subprocess.run(
        [sys.executable, "-m", "varkit", "eval", f"hydra.run.dir={tmp_path / 'one'}", "seed=1", *models, *plan],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert other.returncode == 2 and "seed differ" in other.stdout + other.stderr
