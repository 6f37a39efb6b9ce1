"""One sampling spec: guidance, filters and speed-ups of VAR's sampler as a single value (VAR paper, Sec. 4).

:class:`SamplingConfig` is what travels from a config (``conf/sampling/*.yaml``, composed under ``sampling``) to
:func:`varkit.models.var.sample_images` in ``varkit sample``, ``varkit edit``, ``varkit eval`` and the training
callbacks. Guidance scale ``cfg`` follows the reference's name and, by default, its convention ("var": ``t = 0``
is no guidance, ``logits = (1 + t) cond - t uncond``); ``cfg_convention: llamagen`` reads ``cfg`` as the scale
``s`` of LlamaGen-style repositories (``s = 1`` is no guidance, ``logits = uncond + s (cond - uncond)``, i.e.
``t = s - 1``), so settings copied from them mean the same here.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from varkit.errors import ConfigError
from varkit.registry import CFG_SCHEDULES, SAMPLERS

__all__ = ["CONVENTIONS", "SamplingConfig"]

CONVENTIONS = ("var", "llamagen")


def _plain(value: Any) -> Any:
    """Plain Python containers from any mapping/sequence (an OmegaConf node resolves its interpolations on access,
    so no OmegaConf import is needed here) or anything else."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def _number(key: str, value: Any, allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"sampling.{key}={value!r} is not a number; allowed: {allowed}")
    return float(value)


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample: guidance, top-k / top-p / temperature, smoothing and the training-free speed-ups.

    Args:
        cfg: guidance scale (see ``cfg_convention``); 0 (var) or 1 (llamagen) switches guidance off.
        cfg_schedule: how guidance grows over scales: a :data:`varkit.registry.CFG_SCHEDULES` name or
            ``{name: ..., **args}`` (default: the reference's linear ramp).
        cfg_convention: ``var`` (``t = cfg``) or ``llamagen`` (``t = cfg - 1``).
        top_k: keep the k most likely tokens (0: off; 1: greedy). top_p: nucleus mass (0: off).
        temperature: divides the logits (> 0). smooth: the reference's Gumbel-softmax "more smooth" mode.
        speedups: ``({name: <registered speed-up>, **settings}, ...)``, applied in order; empty: the exact sampler.
    """

    cfg: float = 1.5
    cfg_schedule: str | Mapping[str, Any] = "linear"
    cfg_convention: str = "var"
    top_k: int = 0
    top_p: float = 0.0
    temperature: float = 1.0
    smooth: bool = False
    speedups: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        self._validate()

    # -- construction ---------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Mapping[str, Any] | SamplingConfig | None) -> SamplingConfig:
        """From a plain mapping or an OmegaConf node (``None``: the defaults); bad values raise ConfigError."""
        if config is None:
            return cls()
        if isinstance(config, SamplingConfig):
            return config
        plain = _plain(config)
        if not isinstance(plain, Mapping):
            raise ConfigError(f"sampling must be a mapping of {', '.join(f.name for f in fields(cls))}, got {plain!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(map(str, plain)) - known - {"name"})  # `name`: the option's informational label
        if unknown:
            raise ConfigError(f"sampling has no key {', '.join(unknown)}; allowed keys: {', '.join(sorted(known))}")
        values = {k: v for k, v in plain.items() if k in known}
        if "speedups" in values:
            values["speedups"] = cls._speedup_specs(values["speedups"])
        return cls(**values)

    @staticmethod
    def _speedup_specs(value: Any) -> tuple[dict[str, Any], ...]:
        if value is None:
            return ()
        if isinstance(value, (str, Mapping)):
            value = [value]
        if not isinstance(value, Sequence):
            raise ConfigError(f"sampling.speedups={value!r} must be a list of {{name: <speed-up>, ...}} entries")
        specs = []
        for item in value:
            item = _plain(item)
            spec = {"name": item} if isinstance(item, str) else dict(item) if isinstance(item, Mapping) else None
            if spec is None or "name" not in spec:
                known = ", ".join(SAMPLERS.names())
                raise ConfigError(f"sampling.speedups entry {item!r} needs a name: one of {known}")
            specs.append(spec)
        return tuple(specs)

    def _validate(self) -> None:
        if self.cfg_convention not in CONVENTIONS:
            raise ConfigError(f"sampling.cfg_convention={self.cfg_convention!r}; allowed: {', '.join(CONVENTIONS)}")
        cfg = _number("cfg", self.cfg, "a guidance scale >= 0 (var) or >= 1 (llamagen)")
        lowest = 1.0 if self.cfg_convention == "llamagen" else 0.0
        if cfg < lowest:
            raise ConfigError(
                f"sampling.cfg={self.cfg} is below {lowest:g}; allowed: >= {lowest:g} in the {self.cfg_convention} "
                f"convention ({'1' if lowest else '0'} = no guidance)"
            )
        schedule = self.cfg_schedule
        name = schedule if isinstance(schedule, str) else None
        if isinstance(schedule, Mapping):
            name = schedule.get("name")
        if name not in CFG_SCHEDULES:
            raise ConfigError(
                f"sampling.cfg_schedule={schedule!r} is not a registered guidance schedule; allowed: "
                f"{', '.join(CFG_SCHEDULES.names())} (or {{name: ..., **args}})"
            )
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ConfigError(f"sampling.top_k={self.top_k!r}; allowed: an integer >= 0 (0: off, 1: greedy)")
        top_p = _number("top_p", self.top_p, "a probability mass in [0, 1] (0: off)")
        if not 0.0 <= top_p <= 1.0:
            raise ConfigError(f"sampling.top_p={self.top_p} is outside [0, 1]; allowed: a probability mass (0: off)")
        if _number("temperature", self.temperature, "a number > 0") <= 0.0:
            raise ConfigError(f"sampling.temperature={self.temperature} must be > 0 (use top_k=1 for greedy decoding)")
        if not isinstance(self.smooth, bool):
            raise ConfigError(f"sampling.smooth={self.smooth!r}; allowed: true or false")
        if not isinstance(self.speedups, tuple):
            object.__setattr__(self, "speedups", self._speedup_specs(self.speedups))
        for spec in self.speedups:
            if spec.get("name") not in SAMPLERS:
                raise ConfigError(
                    f"sampling.speedups names {spec.get('name')!r}, which is not a registered speed-up; allowed: "
                    f"{', '.join(SAMPLERS.names()) or '(none)'}"
                )
        self.built_speedups  # noqa: B018  (bad settings fail now, not mid-run)

    # -- use ------------------------------------------------------------------------------------------------------
    @property
    def guidance_weight(self) -> float:
        """The guidance weight ``t`` in the reference's ``(1 + t) cond - t uncond`` (before the schedule)."""
        return float(self.cfg) - 1.0 if self.cfg_convention == "llamagen" else float(self.cfg)

    @functools.cached_property
    def built_speedups(self) -> list[Any]:
        """The speed-up objects, built once per spec (a refiner model is loaded on first use, then kept)."""
        built = []
        for spec in self.speedups:
            try:
                built.append(SAMPLERS.build(dict(spec)))
            except (TypeError, ValueError) as err:
                raise ConfigError(f"sampling.speedups {spec.get('name')!r}: {err}") from None
        return built

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`varkit.models.var.VAR.generate`."""
        schedule = self.cfg_schedule if isinstance(self.cfg_schedule, str) else dict(self.cfg_schedule)
        return {
            "cfg": self.guidance_weight,
            "cfg_schedule": schedule,
            "top_k": int(self.top_k),
            "top_p": float(self.top_p),
            "temperature": float(self.temperature),
            "smooth": bool(self.smooth),
            "speedups": self.built_speedups,
        }

    def replace(self, **changes: Any) -> SamplingConfig:
        """A copy with some fields changed (validated again)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return SamplingConfig.from_config(values)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for logs, ``eval.json`` and checkpoints)."""
        data = asdict(self)
        data["cfg_schedule"] = self.cfg_schedule if isinstance(self.cfg_schedule, str) else dict(self.cfg_schedule)
        data["speedups"] = [dict(s) for s in self.speedups]
        return data

    def describe(self) -> str:
        """One line: ``cfg 1.5 (linear), top-k 900, top-p 0.96 + token_pruning, guidance_cutoff``."""
        schedule = self.cfg_schedule if isinstance(self.cfg_schedule, str) else dict(self.cfg_schedule)
        parts = [f"cfg {self.cfg:g} ({schedule})"]
        if self.top_k:
            parts.append(f"top-k {self.top_k}")
        if self.top_p:
            parts.append(f"top-p {self.top_p:g}")
        if self.temperature != 1.0:
            parts.append(f"temperature {self.temperature:g}")
        names = [str(s["name"]) for s in self.speedups]
        return ", ".join(parts) + (f" + {', '.join(names)}" if names else " (exact)")
