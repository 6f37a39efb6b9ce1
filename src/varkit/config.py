"""Hydra/OmegaConf glue: where varkit's configs live, composing them, validating them, safe instantiation.

Hydra only composes; this module turns a composed config into objects through the registries (varkit components,
referenced by ``name``) and through the explicit allow-list of :mod:`varkit.targets` (third-party objects: trainer,
loggers, callbacks, data modules): every ``_target_`` of a tree — nested, inside lists, under ``_args_`` — is checked
by name before anything is imported, then by the identity of the object it resolves to. Hydra's own node is checked
too (its callbacks, launcher, sweeper and logging configuration can name code). Nothing else from a config is ever
imported or executed.
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
from varkit.targets import allow_target, check_target, resolve_target
from varkit.validation import validate_runtime, validate_values

__all__ = [
    "ConfigError",
    "allow_target",
    "check_hydra_node",
    "check_targets",
    "compose",
    "config_dir",
    "instantiate_group",
    "register_presets",
    "register_resolvers",
    "safe_instantiate",
    "to_plain",
    "validate_components",
    "validate_for_run",
]

log = logging.getLogger(__name__)

#: Hydra's launcher/sweeper classes a config may select (Hydra instantiates them before any varkit code runs)
HYDRA_PLUGIN_TARGETS: frozenset[str] = frozenset(
    {
        "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
        "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
    }
)
#: ``class:`` values allowed in Hydra's logging configuration (``logging.config.dictConfig`` imports them)
LOGGING_CLASSES: frozenset[str] = frozenset(
    {
        "logging.StreamHandler",
        "logging.FileHandler",
        "logging.NullHandler",
        "logging.Formatter",
        "logging.handlers.RotatingFileHandler",
        "logging.handlers.TimedRotatingFileHandler",
        "logging.handlers.WatchedFileHandler",
        "colorlog.ColoredFormatter",
    }
)
LOGGING_EXTERNALS: frozenset[str] = frozenset({"ext://sys.stdout", "ext://sys.stderr"})


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


def _config_dir() -> Path:
    return config_dir()


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


def compose_for_check(
    config_name: str, overrides: Sequence[str] = (), *, multirun: bool = False, config_dir: str | None = None
) -> DictConfig:
    """Compose as ``hydra.main`` is about to (hydra node included, sweep overrides left to the jobs in multirun)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from varkit.plugins import load_plugins

    load_plugins()
    register_resolvers()
    register_presets()
    GlobalHydra.instance().clear()
    primary = config_dir or str(_config_dir())
    try:
        with initialize_config_dir(config_dir=primary, version_base="1.3"):
            hydra = GlobalHydra.instance().hydra
            assert hydra is not None
            mode = RunMode.MULTIRUN if multirun else RunMode.RUN
            cfg = hydra.compose_config(config_name, list(overrides), run_mode=mode, with_log_configuration=False)
            HydraConfig.instance().set_config(cfg)
    finally:
        GlobalHydra.instance().clear()
    return cfg


def to_plain(cfg: Any) -> Any:
    """A resolved plain-container copy (what checkpoints and loggers store: ``weights_only``-safe)."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    return cfg


def _iter_targets(node: Any, path: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                yield path or "<root>", value
            else:
                yield from _iter_targets(value, where)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _iter_targets(value, f"{path}[{i}]")


def check_targets(node: Any, *, resolve: bool = False) -> None:
    """Refuse any ``_target_`` in ``node`` (at any depth) that is not allow-listed (:mod:`varkit.targets`).

    By name only (nothing imported) unless ``resolve``: then each target is also imported and its identity checked.
    """
    for where, target in _iter_targets(to_plain(node)):
        if resolve:
            resolve_target(target, where) if isinstance(target, str) else check_target(target, where)
        else:
            check_target(target, where)


def check_hydra_node(hydra_node: Any) -> None:
    """Refuse what Hydra itself would instantiate or import from its own config node: callbacks, a launcher or
    sweeper that is not Hydra's basic one, and logging configuration with factories (``()``), non-logging handler
    classes or ``ext://`` references other than the standard streams."""
    # unresolved: parts of Hydra's node exist only inside a job; an interpolated target is refused as not a name
    plain = OmegaConf.to_container(hydra_node, resolve=False) if isinstance(hydra_node, DictConfig) else hydra_node
    if not isinstance(plain, Mapping):
        return
    callbacks = plain.get("callbacks") or {}
    for key, entry in callbacks.items() if isinstance(callbacks, Mapping) else []:
        if entry:
            raise ConfigError(f"hydra.callbacks.{key} is not allowed: varkit runs no Hydra callbacks from a config")
    for group in ("launcher", "sweeper"):
        node = plain.get(group)
        target = node.get("_target_") if isinstance(node, Mapping) else None
        if target is not None and target not in HYDRA_PLUGIN_TARGETS:
            raise ConfigError(
                f"hydra.{group}._target_={target!r} is not allowed; allowed: {', '.join(sorted(HYDRA_PLUGIN_TARGETS))}"
            )
    for group in ("job_logging", "hydra_logging"):
        _check_logging(plain.get(group), f"hydra.{group}")


def _check_logging(node: Any, where: str) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            here = f"{where}.{key}"
            if key == "()":
                raise ConfigError(f"{here} is not allowed: logging factories from a config would run code")
            if key == "class" and str(value) not in LOGGING_CLASSES:
                raise ConfigError(f"{here}={value!r} is not allowed; allowed: {', '.join(sorted(LOGGING_CLASSES))}")
            _check_logging(value, here)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _check_logging(value, f"{where}[{i}]")
    elif isinstance(node, str) and node.startswith("ext://") and node not in LOGGING_EXTERNALS:
        raise ConfigError(f"{where}={node!r} is not allowed; allowed: {', '.join(sorted(LOGGING_EXTERNALS))}")


def safe_instantiate(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` after checking every ``_target_`` in ``node`` (and in ``kwargs``) against the
    allow-list, by name and by the identity of the object each resolves to."""
    from hydra.utils import instantiate

    check_targets(node, resolve=True)
    for value in kwargs.values():
        if isinstance(value, (Mapping, list, tuple, DictConfig, ListConfig)):
            check_targets(value, resolve=True)
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
    check_targets(plain, resolve=True)  # imports only allow-listed modules
    if isinstance(plain, Mapping):
        validate_values(plain)


def validate_for_run(cfg: DictConfig | Mapping[str, Any]) -> None:
    """:func:`validate_components` plus what a run on this machine needs (devices present, outputs writable)."""
    validate_components(cfg)
    plain = to_plain(cfg)
    if isinstance(plain, Mapping):
        validate_runtime(plain)
