"""Third-party components: packages that declare an entry point in the group ``varkit.plugins``.

Importing a plugin's module runs its ``@QUANTIZERS.register(...)``-style decorators. Plugins load once, loudly:
a failing plugin raises :class:`PluginError` naming it. Environment switches:

* ``VARKIT_DISABLE_PLUGIN_AUTOLOAD=1`` — load no plugin;
* ``VARKIT_BLOCK_PLUGINS=name1,name2`` — skip the named plugins (entry-point names).

A plugin may ship Hydra configs in a ``conf`` sub-package next to its module (``<module>.conf``); varkit's search-path
plugin (``hydra_plugins.varkit_searchpath``) adds them so their files become options of varkit's config groups.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from varkit.registry import BUILTIN, PRESETS, REGISTRIES

__all__ = ["ENTRY_POINT_GROUP", "LoadedPlugin", "PluginError", "load_plugins", "plugin_config_packages"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "varkit.plugins"
DISABLE_ENV = "VARKIT_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_ENV = "VARKIT_BLOCK_PLUGINS"


class PluginError(RuntimeError):
    """A plugin failed to import or to register its components."""


@dataclass(frozen=True)
class LoadedPlugin:
    name: str
    module: str
    distribution: str | None
    registered: tuple[str, ...]


_loaded: dict[str, LoadedPlugin] = {}
_done = False


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def blocked_plugins() -> set[str]:
    return {n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()}


def discover() -> list[EntryPoint]:
    """Entry points of the ``varkit.plugins`` group that are neither disabled nor blocked, sorted by name."""
    if _truthy(os.environ.get(DISABLE_ENV)):
        return []
    blocked = blocked_plugins()
    return sorted((ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in blocked), key=lambda e: e.name)


def load_plugins() -> dict[str, LoadedPlugin]:
    """Import every discovered plugin once and record which components each registered."""
    global _done
    if _done:
        return dict(_loaded)
    for ep in discover():
        registries = {**REGISTRIES, **PRESETS}
        before = {kind: set(reg.names()) for kind, reg in registries.items()}
        try:
            ep.load()
        except Exception as err:  # a broken plugin must be named, whatever it raised
            raise PluginError(
                f"varkit plugin {ep.name!r} ({ep.value}) failed to load: {type(err).__name__}: {err}. "
                f"Fix or uninstall it, or block it with {BLOCK_ENV}={ep.name}."
            ) from err
        added: list[str] = []
        for kind, reg in registries.items():
            for name in sorted(set(reg.names()) - before[kind]):
                if reg.entry(name).origin == BUILTIN:  # a built-in module the plugin happened to import first
                    continue
                reg.set_origin(name, f"plugin {ep.name}")
                added.append(f"{kind}:{name}")
        dist = ep.dist.name if ep.dist is not None else None
        _loaded[ep.name] = LoadedPlugin(ep.name, ep.module, dist, tuple(added))
        log.debug("loaded varkit plugin %s (%s): %s", ep.name, ep.module, ", ".join(added) or "no components")
    _done = True
    return dict(_loaded)


def plugin_config_packages() -> list[str]:
    """``<module>.conf`` packages shipped by discovered plugins (without importing the plugins themselves)."""
    packages = []
    for ep in discover():
        candidate = f"{ep.module}.conf"
        try:
            found = importlib.util.find_spec(candidate) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            packages.append(candidate)
    return packages
