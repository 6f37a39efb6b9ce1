"""Command-line overrides and W&B sweep values.

W&B's agent formats a sweep value ``None`` as the string ``"None"``, which Hydra keeps as a string. Write
``"null"`` in sweep specs instead (Hydra reads ``key=null`` as null); :func:`null_overrides` rewrites ``key=None``
for commands built elsewhere (every Hydra command runs its arguments through it), and :func:`sweep_overrides`
formats Python values as Hydra overrides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["null_overrides", "sweep_overrides"]


def _override_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_override_value(item) for item in value) + "]"
    return str(value)


def sweep_overrides(parameters: Mapping[str, Any]) -> list[str]:
    """Hydra overrides ``key=value`` for a dict of sweep values (``None`` -> ``null``, booleans lower-case).

    >>> sweep_overrides({"optim.lr": 0.001, "optim.weight_decay_end": None, "compile": False})
    ['optim.lr=0.001', 'optim.weight_decay_end=null', 'compile=false']
    """
    return [f"{key}={_override_value(value)}" for key, value in parameters.items()]


def null_overrides(arguments: Sequence[str]) -> list[str]:
    """``key=None`` (how W&B's agent formats a ``null`` sweep value) rewritten as Hydra's ``key=null``.

    Only whole values ``None`` change; other arguments pass through untouched.

    >>> null_overrides(["optim.lr=0.01", "optim.weight_decay_end=None", "name=None-run"])
    ['optim.lr=0.01', 'optim.weight_decay_end=null', 'name=None-run']
    """
    rewritten = []
    for argument in arguments:
        key, sep, value = argument.partition("=")
        rewritten.append(f"{key}=null" if sep and value == "None" and not key.startswith("-") else argument)
    return rewritten
