"""Hydra/OmegaConf glue: where varkit's configs live, composing them, validating them, safe instantiation.

Hydra only composes; this module turns a composed config into objects through the registries (varkit components,
referenced by ``name``) and through an allow-list of ``_target_`` prefixes (third-party objects: trainer, loggers,
callbacks, data modules). Nothing else from a config is ever imported or executed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

import varkit.evaluation  # noqa: F401  (registers the feature extractors that configs name)
from varkit.contracts import InvalidScalesError
from varkit.errors import ConfigError
from varkit.registry import REGISTRIES, SCALE_SCHEDULES, UnknownComponentError

__all__ = [
    "ALLOWED_TARGET_PREFIXES",
    "ConfigError",
    "compose",
    "config_dir",
    "instantiate_group",
    "register_presets",
    "register_resolvers",
    "safe_instantiate",
    "to_plain",
    "validate_components",
]

log = logging.getLogger(__name__)

#: ``_target_`` values a config may name; everything else is refused before anything is imported
ALLOWED_TARGET_PREFIXES: tuple[str, ...] = (
    "varkit.",
    "lightning.pytorch.",
    "pytorch_lightning.",
    "torch.optim.",
    "torchmetrics.",
)


def register_resolvers() -> None:
    """OmegaConf resolvers used by varkit's configs (idempotent).

    ``${varkit.precision:ACCELERATOR}`` -> ``bf16-mixed`` where bf16 is fast on that accelerator, else ``32-true``.
    """
    from varkit.hardware import trainer_precision

    if not OmegaConf.has_resolver("varkit.precision"):
        OmegaConf.register_new_resolver("varkit.precision", lambda accelerator="auto": trainer_precision(accelerator))


def register_presets() -> None:
    """Offer every built-in model and tokenizer preset as a Hydra option (``model=var_d16``, ``tokenizer=vqvae_f16``).

    The options are generated from the presets' one definition (:mod:`varkit.models.presets`) into Hydra's
    ConfigStore instead of being copied into ``conf/model`` and ``conf/tokenizer`` YAML files. Idempotent.
    """
    from hydra.core.config_store import ConfigStore

    from varkit.models.presets import preset_configs

    store = ConfigStore.instance()
    for group, options in preset_configs().items():
        for name, node in options.items():
            store.store(group=group, name=name, node=node, provider="varkit")


def config_dir() -> Path:
    """The directory of varkit's own Hydra configs (``conf/`` in a checkout, ``varkit/conf`` in a wheel)."""
    path = (Path(__file__).parent / "conf").resolve()
    if not (path / "train_var.yaml").is_file():
        raise ConfigError(f"varkit's configs were not found at {path}; the installation is incomplete")
    return path


def compose(config_name: str, overrides: Sequence[str] = (), *, with_hydra: bool = False) -> DictConfig:
    """Compose ``config_name`` with Hydra's compose API (plugins' config options included).

    ``${hydra:...}`` interpolations resolve as in a real run; ``with_hydra=True`` keeps the ``hydra`` node.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from varkit.plugins import load_plugins

    load_plugins()
    register_resolvers()
    register_presets()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
    if not with_hydra:
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


def to_plain(cfg: Any) -> Any:
    """A resolved plain-container copy (what checkpoints and loggers store: ``weights_only``-safe)."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    return cfg


def _iter_targets(node: Any, path: str = "") -> Iterable[tuple[str, str]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                yield path or "<root>", str(value)
            else:
                yield from _iter_targets(value, where)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _iter_targets(value, f"{path}[{i}]")


def check_targets(node: Any) -> None:
    """Refuse any ``_target_`` outside :data:`ALLOWED_TARGET_PREFIXES` (before anything is imported)."""
    for where, target in _iter_targets(to_plain(node)):
        if not target.startswith(ALLOWED_TARGET_PREFIXES):
            raise ConfigError(
                f"{where}._target_={target!r} is not allowed; configs may only instantiate "
                f"{', '.join(p + '*' for p in ALLOWED_TARGET_PREFIXES)}. Register a component instead."
            )


def safe_instantiate(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` after checking every ``_target_`` in ``node`` against the allow-list."""
    from hydra.utils import instantiate

    check_targets(node)
    return instantiate(node, **kwargs)


def instantiate_group(group: Any) -> list[Any]:
    """Objects of a ``{key: {_target_: ...}}`` config group (callbacks, loggers); null entries are skipped."""
    return [safe_instantiate(entry) for entry in (group or {}).values() if entry is not None and "_target_" in entry]


def validate_components(cfg: DictConfig | Mapping[str, Any]) -> None:
    """One clear error for unknown component names, bad schedules and forbidden targets, before any training.

    Checks every top-level node whose key is a registry kind (``quantizer``, ``schedule``, ``attention``,
    ``cfg_schedule``) and every ``_target_``.
    """
    plain = to_plain(cfg)
    try:
        for kind, registry in REGISTRIES.items():
            node = plain.get(kind) if isinstance(plain, Mapping) else None
            if node is None:
                continue
            name = node.get("name") if isinstance(node, Mapping) else node
            if name is None:
                raise ConfigError(f"config node '{kind}' needs a 'name' (one of: {', '.join(registry.names())})")
            registry.get(str(name))
        if isinstance(plain, Mapping) and plain.get("schedule") is not None:
            SCALE_SCHEDULES.resolve(plain["schedule"])
    except (UnknownComponentError, InvalidScalesError, TypeError) as err:
        raise ConfigError(str(err)) from None
    check_targets(plain)
