"""A plugin adds a sampling speed-up through the registry alone: plugins/varkit-speedup-example, loaded through
its ``varkit.plugins`` entry point (installed in CI; here a minimal installed distribution when it is not)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

from varkit.plugins import ENTRY_POINT_GROUP

PLUGIN_SRC = Path(__file__).resolve().parents[2] / "plugins" / "varkit-speedup-example" / "src"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment under which ``varkit`` discovers the plugin's entry point."""
    try:
        distribution("varkit-speedup-example")
        return dict(os.environ)
    except PackageNotFoundError:
        site = tmp_path_factory.mktemp("site")
        info = site / "varkit_speedup_example-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: varkit-speedup-example\nVersion: 0.1.0\n")
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nspeedup-example = varkit_speedup_example\n")
        path = os.pathsep.join([str(site), str(PLUGIN_SRC), os.environ.get("PYTHONPATH", "")])
        return {**os.environ, "PYTHONPATH": path}


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)


def test_plugin_speedup_is_listed_with_its_origin(plugin_env: dict[str, str]) -> None:
    out = _run(["-m", "varkit", "list", "speedup", "--json"], plugin_env)
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)["speedup"]
    assert listed["layer_skip"] == "plugin speedup-example"
    assert listed["token_pruning"] == "built-in"


def test_plugin_sampling_option_composes(plugin_env: dict[str, str]) -> None:
    out = _run(["-m", "varkit", "config", "sample", "sampling=layer_skip"], plugin_env)
    assert out.returncode == 0, out.stderr
    assert "layer_skip" in out.stdout


def test_plugin_speedup_passes_the_conformance_kit(plugin_env: dict[str, str]) -> None:
    script = (
        "from varkit.plugins import load_plugins; load_plugins()\n"
        "from varkit.sampling import SamplingConfig\n"
        "from varkit.testing import check_speedup\n"
        "spec = SamplingConfig.from_config({'speedups': [{'name': 'layer_skip', 'blocks': 1}]})\n"
        "assert type(spec.built_speedups[0]).__module__ == 'varkit_speedup_example'\n"
        "report = check_speedup('layer_skip', {'blocks': 1}, quantizers=['msvq'], kernels=['sdpa'])\n"
        "print('PASSED', ','.join(report.passed))\n"
    )
    out = _run(["-c", script], plugin_env)
    assert out.returncode == 0, out.stderr
    assert "off/bit-identical" in out.stdout and "on/batch-independent" in out.stdout
