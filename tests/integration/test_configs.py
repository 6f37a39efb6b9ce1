"""Every option of every config group composes (and, where cheap, builds) with the real ``conf/``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra.utils import get_class

from varkit import ATTENTION_KERNELS, CFG_SCHEDULES
from varkit.config import check_targets, config_dir, validate_components
from varkit.models.presets import preset_configs
from varkit.registry import SCALE_SCHEDULES

CONF = config_dir()
PRIMARY = sorted(p.stem for p in CONF.glob("*.yaml"))


def _groups_of(primary: str) -> set[str]:
    defaults = yaml.safe_load((CONF / f"{primary}.yaml").read_text()).get("defaults", [])
    return {next(iter(d)).split(" ")[-1] for d in defaults if isinstance(d, dict)}


def _stages(option: Path) -> set[str] | None:
    """An option may declare the primary configs it belongs to with a ``# stages: a, b`` comment line."""
    for line in option.read_text().splitlines():
        if line.startswith("# stages:"):
            return {s.strip() for s in line.split(":", 1)[1].split(",")}
    return None


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for primary in PRIMARY:
        for group in sorted(_groups_of(primary) - {"hydra"}):
            for option in sorted((CONF / group).glob("*.yaml")):
                stages = _stages(option)
                if stages is None or primary in stages:
                    cases.append((primary, group, option.stem))
            # model/tokenizer options are generated from the presets' one definition (varkit.models.presets)
            cases.extend((primary, group, name) for name in sorted(preset_configs().get(group, {})))
    return cases


def test_primary_configs_exist() -> None:
    assert {"train_tokenizer", "train_var"} <= set(PRIMARY)


@pytest.mark.parametrize(("primary", "group", "option"), _cases(), ids=lambda v: str(v))
def test_option_composes_and_validates(compose_cfg, primary: str, group: str, option: str) -> None:
    cfg = compose_cfg(primary, [f"{group}={option}"])
    validate_components(cfg)
    if group == "schedule":
        SCALE_SCHEDULES.resolve(cfg.schedule)
    elif group == "cfg_schedule":
        schedule = CFG_SCHEDULES.build(cfg.cfg_schedule)
        assert schedule(0, 4, 2.0) >= 0.0
    elif group == "attention":
        ATTENTION_KERNELS.build(cfg.attention)
    node = cfg.get(group) if group != "experiment" else cfg
    check_targets(node)
    for target in _targets(node):
        get_class(target)  # every allowed _target_ exists


def _targets(node) -> list[str]:
    from omegaconf import OmegaConf

    found: list[str] = []

    def walk(value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "_target_":
                    found.append(item)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(OmegaConf.to_container(node, resolve=False) if node is not None else None)
    return found


def test_run_directory_is_stable_for_the_same_command(compose_cfg, tmp_path: Path) -> None:
    from varkit.config import compose

    first = compose("train_var", ["name=abc"], with_hydra=True)
    second = compose("train_var", ["name=abc"], with_hydra=True)
    assert first.hydra.run.dir == second.hydra.run.dir and first.hydra.run.dir.endswith("runs/abc")
