"""The whole plugin path: installed entry point -> registry -> config group option -> composed config -> object."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import distribution
from pathlib import Path

import pytest

from varkit import SCALE_SCHEDULES, Scales
from varkit.plugins import ENTRY_POINT_GROUP, load_plugins


def _varkit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "varkit", *args], capture_output=True, text=True, env=full_env, timeout=120
    )


@pytest.fixture(scope="module")
def fibonacci_installed() -> None:
    try:
        dist = distribution("varkit-fibonacci")
    except Exception:
        pytest.fail("the example plugin is not installed: pip install -e plugins/varkit-fibonacci (see README)")
    eps = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
    assert [(ep.name, ep.value) for ep in eps] == [("fibonacci", "varkit_fibonacci")]


def test_entry_point_registers_with_plugin_origin(fibonacci_installed: None) -> None:
    loaded = load_plugins()
    assert "fibonacci" in loaded and loaded["fibonacci"].distribution == "varkit-fibonacci"
    assert loaded["fibonacci"].registered == ("schedule:fibonacci",)
    entry = SCALE_SCHEDULES.entry("fibonacci")
    assert entry.origin == "plugin fibonacci"
    assert SCALE_SCHEDULES.build({"name": "fibonacci", "latent_size": 16}) == Scales.of([1, 2, 3, 5, 8, 13, 16])


def test_plugin_config_option_composes_and_builds(fibonacci_installed: None, compose_cfg) -> None:
    cfg = compose_cfg("train_tokenizer", ["schedule=fibonacci", "schedule.latent_size=8"])
    assert cfg.schedule.name == "fibonacci"
    assert SCALE_SCHEDULES.resolve(cfg.schedule) == Scales.of([1, 2, 3, 5, 8])


def test_list_shows_plugin_and_block_env_removes_it(fibonacci_installed: None) -> None:
    shown = _varkit("list", "schedule", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["schedule"]["fibonacci"] == "plugin fibonacci"
    assert json.loads(shown.stdout)["schedule"]["var_256"] == "built-in"
    blocked = _varkit("list", "schedule", "--json", env={"VARKIT_BLOCK_PLUGINS": "other,fibonacci"})
    assert blocked.returncode == 0, blocked.stderr
    assert "fibonacci" not in json.loads(blocked.stdout)["schedule"]
    disabled = _varkit("list", "--json", env={"VARKIT_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert "fibonacci" not in json.loads(disabled.stdout)["schedule"]
    # a blocked plugin's config option disappears too
    cfg = _varkit("config", "train_tokenizer", "schedule=fibonacci", env={"VARKIT_BLOCK_PLUGINS": "fibonacci"})
    assert cfg.returncode == 2 and "Could not find 'schedule/fibonacci'" in cfg.stderr


def _fake_distribution(site: Path, name: str, module: str, source: str) -> None:
    """A real (if minimal) installed distribution: a module plus its .dist-info with entry points."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{name.replace('-', '_')}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{name} = {module}\n")


def test_broken_plugin_fails_loudly_naming_it(tmp_path: Path) -> None:
    _fake_distribution(tmp_path, "brokenplug", "brokenplug_mod", "raise RuntimeError('boom at import')\n")
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = _varkit("list", env=env)
    assert out.returncode == 1
    assert "varkit plugin 'brokenplug'" in out.stderr and "boom at import" in out.stderr
    assert "VARKIT_BLOCK_PLUGINS=brokenplug" in out.stderr and "Traceback" not in out.stderr
    assert _varkit("list", env={**env, "VARKIT_BLOCK_PLUGINS": "brokenplug"}).returncode == 0


def test_plugin_clashing_with_a_builtin_is_refused(tmp_path: Path) -> None:
    source = """
        from varkit import SCALE_SCHEDULES
        @SCALE_SCHEDULES.register("var_256")
        def mine():
            return None
    """
    _fake_distribution(tmp_path, "clashplug", "clashplug_mod", source)
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = _varkit("list", env=env)
    assert out.returncode == 1
    assert "'var_256' is already registered by varkit.scales (built-in)" in out.stderr
    assert "clashplug_mod" in out.stderr
