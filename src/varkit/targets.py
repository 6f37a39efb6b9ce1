"""The allow-list of ``_target_``s: the only third-party objects a config may instantiate.

Configs are shared (sweeps, papers, issues), so a config must never be able to run code. varkit's own components
come from the registries (``name:``); everything else a config builds through Hydra's ``_target_`` must be named
here, exactly:

* an explicit set of fully-qualified names (the Lightning Trainer and the callbacks, loggers and strategies
  varkit's ``conf/`` uses, varkit's DataModules/callbacks/strategy), and
* a few *families*: ``<fixed module>.<ClassName>`` where the class must be a subclass of the family's base
  (``torch.optim.<Optimizer>``, ``torch.optim.lr_scheduler.<LRScheduler>``, ``lightning.pytorch.callbacks.
  <Callback>``, ``lightning.pytorch.loggers.<Logger>``, ``lightning.pytorch.strategies.<Strategy>``,
  ``lightning.pytorch.plugins.<...>``, ``torchmetrics.<Metric>``).

The check happens on the *string* first, before anything is imported (importing a module path is itself code
execution when the module is hostile), then on the resolved object: its ``__module__``/``__qualname__`` must be
the listed one (for families: defined inside the family's package, a class, a subclass of the base). So a path
that *routes through* an allowed module — ``varkit.checkpoint.io.torch.load``, ``varkit.plugins.os.system`` — is
refused: it is not on the list, and no attribute walk ever happens.

Plugins extend the list explicitly::

    from varkit.targets import allow_target
    allow_target("my_plugin.callbacks.MyCallback")       # or allow_target(MyCallback)

This module is plain Python (no Hydra, no OmegaConf, no Lightning import at module level).
"""

from __future__ import annotations

import importlib
import keyword
from collections.abc import Callable
from typing import Any

from varkit.errors import ConfigError

__all__ = ["ALLOWED_TARGETS", "TARGET_FAMILIES", "allow_target", "allowed_targets", "check_target", "resolve_target"]

#: exact ``_target_`` strings a config may name -> ``module:qualname`` the name must resolve to (``None``: the
#: resolved object's own identity is recorded at registration; checked to be defined in the same package)
ALLOWED_TARGETS: dict[str, str | None] = {
    "lightning.pytorch.Trainer": "lightning.pytorch.trainer.trainer:Trainer",
    "pytorch_lightning.Trainer": "pytorch_lightning.trainer.trainer:Trainer",
    # varkit's own third-party-style objects (Lightning pieces built by Hydra)
    "varkit.data.modules.WebDataModule": "varkit.data.modules:WebDataModule",
    "varkit.data.modules.TokenDataModule": "varkit.data.modules:TokenDataModule",
    "varkit.lit.fsdp.FSDP2Strategy": "varkit.lit.fsdp:FSDP2Strategy",
    "varkit.lit.var_callbacks.EMA": "varkit.lit.var_callbacks:EMA",
    "varkit.lit.var_callbacks.SampleGrid": "varkit.lit.var_callbacks:SampleGrid",
    "varkit.lit.var_callbacks.Throughput": "varkit.lit.var_callbacks:Throughput",
    "varkit.lit.tokenizer_callbacks.ReconstructionGrid": "varkit.lit.tokenizer_callbacks:ReconstructionGrid",
    "varkit.lit.eval_callback.SampleQuality": "varkit.lit.eval_callback:SampleQuality",
    "varkit.lit.safe_io.SafeCheckpointIO": "varkit.lit.safe_io:SafeCheckpointIO",
    "varkit.data.modules.LogSkippedSamples": "varkit.data.modules:LogSkippedSamples",
    "varkit.tracking.AppendingCSVLogger": "varkit.tracking:AppendingCSVLogger",
}

#: family module -> (base class as ``module:qualname``, package the class must be defined in)
TARGET_FAMILIES: dict[str, tuple[str, str]] = {
    "torch.optim": ("torch.optim.optimizer:Optimizer", "torch.optim"),
    "torch.optim.lr_scheduler": ("torch.optim.lr_scheduler:LRScheduler", "torch.optim"),
    "lightning.pytorch.callbacks": ("lightning.pytorch.callbacks.callback:Callback", "lightning.pytorch.callbacks"),
    "lightning.pytorch.loggers": ("lightning.pytorch.loggers.logger:Logger", "lightning.pytorch.loggers"),
    "lightning.pytorch.strategies": ("lightning.pytorch.strategies.strategy:Strategy", "lightning.pytorch.strategies"),
    "lightning.pytorch.plugins": ("builtins:object", "lightning."),
    "lightning.pytorch.profilers": ("lightning.pytorch.profilers.profiler:Profiler", "lightning.pytorch.profilers"),
    "torchmetrics": ("torchmetrics.metric:Metric", "torchmetrics"),
}

#: family module -> base classes refused inside it: a config must not swap the checkpoint loader varkit installs
#: (``varkit.lit.safe_io.SafeCheckpointIO``, on the exact list) for one that loads with torch's default
FAMILY_EXCLUDES: dict[str, tuple[str, ...]] = {
    "lightning.pytorch.plugins": ("lightning.fabric.plugins.io.checkpoint_io:CheckpointIO",),
}

_PLUGIN_TARGETS: dict[str, str] = {}


def _identity(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', '?')}"


def allow_target(target: str | type | Callable[..., Any]) -> str:
    """Allow one more ``_target_`` (a plugin's callback, logger, DataModule, ...); returns the allowed string.

    Give the class/function itself (its defining ``module.qualname`` is allowed) or its dotted name; a name is
    checked against the object it resolves to when a config uses it. Call it at plugin import time.
    """
    if isinstance(target, str):
        if not _is_dotted_name(target):
            raise ConfigError(f"allow_target({target!r}): expected a dotted name such as 'package.module.Class'")
        _PLUGIN_TARGETS[target] = ""
        return target
    module, qualname = getattr(target, "__module__", None), getattr(target, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise ConfigError(f"allow_target({target!r}): only module-level classes and functions can be allowed")
    name = f"{module}.{qualname}"
    _PLUGIN_TARGETS[name] = f"{module}:{qualname}"
    return name


def allowed_targets() -> list[str]:
    """Every exact name allowed now, then the families as ``module.<Class>``."""
    return sorted({*ALLOWED_TARGETS, *_PLUGIN_TARGETS}) + [f"{family}.<Class>" for family in TARGET_FAMILIES]


def _is_dotted_name(text: str) -> bool:
    parts = text.split(".")
    return len(parts) >= 2 and all(p.isidentifier() and not keyword.iskeyword(p) for p in parts)


def _refuse(where: str, target: object, why: str) -> ConfigError:
    return ConfigError(
        f"{where}._target_={target!r} is not allowed ({why}); configs may only instantiate allow-listed classes "
        "(the Lightning Trainer, its callbacks/loggers/strategies/plugins, torch optimizers and LR schedulers, "
        "torchmetrics metrics, varkit's DataModules and callbacks) — a plugin adds its own with "
        "varkit.targets.allow_target(...)"
    )


def check_target(target: object, where: str = "<root>") -> None:
    """Refuse ``target`` unless it is on the allow-list, by its string alone (nothing is imported)."""
    if not isinstance(target, str) or not _is_dotted_name(target):
        raise _refuse(where, target, "not a dotted name")
    if target in ALLOWED_TARGETS or target in _PLUGIN_TARGETS:
        return
    family, _, name = target.rpartition(".")
    if family in TARGET_FAMILIES and name[:1].isupper():
        return
    raise _refuse(where, target, "not on the allow-list")


def _import_attribute(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


def _load(identity: str) -> Any:
    module, _, qualname = identity.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def resolve_target(target: str, where: str = "<root>") -> Any:
    """The object ``target`` names, after :func:`check_target` and a check of the resolved object's identity.

    Only modules named on the allow-list (or the fixed family modules) are ever imported; the resolved object
    must be defined where the list says (families: a class defined inside the family's package, subclassing the
    family's base).
    """
    check_target(target, where)
    module, _, name = target.rpartition(".")
    expected = ALLOWED_TARGETS.get(target) or _PLUGIN_TARGETS.get(target)
    try:
        if target in ALLOWED_TARGETS or target in _PLUGIN_TARGETS:
            obj = _import_attribute(module, name)
            if expected and _identity(obj) != expected:
                raise _refuse(where, target, f"it resolves to {_identity(obj)}, not {expected}")
            if not expected and not (callable(obj) and str(getattr(obj, "__module__", "")).startswith(module)):
                raise _refuse(where, target, f"it resolves to {_identity(obj)}, not an object defined in {module}")
            return obj
        base_identity, package = TARGET_FAMILIES[module]
        obj = importlib.import_module(module).__dict__.get(name)
        if obj is None:
            raise _refuse(where, target, f"{module} has no class {name}")
        base = _load(base_identity)
        if not (isinstance(obj, type) and issubclass(obj, base) and obj.__module__.startswith(package)):
            raise _refuse(where, target, f"it resolves to {_identity(obj)}, not a {base.__qualname__} class")
        for excluded in FAMILY_EXCLUDES.get(module, ()):
            if issubclass(obj, _load(excluded)):
                raise _refuse(where, target, "checkpoint I/O is varkit.lit.safe_io.SafeCheckpointIO (weights only)")
        return obj
    except ImportError as err:
        raise ConfigError(f"{where}._target_={target!r} cannot be imported: {err}") from None
