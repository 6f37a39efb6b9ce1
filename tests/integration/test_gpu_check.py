"""benchmarks/gpu_check.py: its CPU dry run (tiny shapes) produces every section the GPU run reports."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def test_gpu_check_dry_run_reports_every_number(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "gpu.json"
    results = module.main(["--dry-run", "--json", str(out)])
    assert json.loads(out.read_text())["device"] == "cpu (dry run)"
    assert [r["model"].split()[0] for r in results["train"]] == ["VAR-d16", "VAR-d30"]
    assert all(r["tokens_per_s"] > 0 for r in results["train"])
    assert [r["sampler"] for r in results["sample"]] == ["exact", "fast (stack)"]
    assert all(r["images_per_s"] > 0 for r in results["sample"])
    kernels = {r["kernel"]: r for r in results["attention"]}
    assert kernels["eager"]["sampling_max_abs_diff"] == 0.0
    assert kernels["sdpa"]["teacher_forcing_max_abs_diff"] < 1e-4
