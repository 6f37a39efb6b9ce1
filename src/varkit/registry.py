"""Component registries: one generic, typed :class:`Registry` and one instance per swappable kind.

A registry maps a short, stable name (``"msvq"``, ``"var_256"``, ``"sdpa"``) to a factory (a class or a function).
It is the allow-list of what a config may build: configs name components, they never carry import paths.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

if TYPE_CHECKING:  # types only: the registries sit below everything they hold (docs/architecture.md)
    from varkit.contracts import AttentionKernel, GuidanceSchedule, MultiScaleQuantizer, Scales
    from varkit.evaluation.features import FeatureExtractor
    from varkit.models.generation import Speedup
    from varkit.models.var import VAR
    from varkit.models.vqvae import VQVAE
    from varkit.objectives.base import Objective

__all__ = [
    "ATTENTION_KERNELS",
    "CFG_SCHEDULES",
    "FEATURE_EXTRACTORS",
    "MODELS",
    "OBJECTIVES",
    "PRESETS",
    "QUANTIZERS",
    "REGISTRIES",
    "SAMPLERS",
    "SCALE_SCHEDULES",
    "DuplicateComponentError",
    "Entry",
    "Registry",
    "UnknownComponentError",
    "to_plain",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

BUILTIN = "built-in"


def to_plain(value: Any) -> Any:
    """A plain-container copy of config data: mappings become dicts and sequences lists (tuples stay tuples).

    Works on OmegaConf nodes too (they are mappings and sequences, and resolve interpolations on access) without
    importing OmegaConf, so the plain-torch layers can take a config node or a dict alike.

    >>> to_plain({"a": [1, (2, 3)], "b": {"c": "d"}})
    {'a': [1, (2, 3)], 'b': {'c': 'd'}}
    """
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(to_plain(v) for v in value)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [to_plain(v) for v in value]
    return value


class UnknownComponentError(KeyError):
    """Raised for a name no component was registered under; the message lists close matches and all names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class DuplicateComponentError(ValueError):
    """Raised when a second component is registered under a taken name; the message names both origins."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered component: its name, factory, the module defining it and its origin (built-in or plugin)."""

    name: str
    factory: Callable[..., T]
    module: str
    origin: str

    @property
    def summary(self) -> str:
        doc = (getattr(self.factory, "__doc__", None) or "").strip()
        return doc.splitlines()[0] if doc else ""


class Registry(Generic[T]):
    """A named collection of factories for one kind of component.

    >>> toys: Registry[int] = Registry("toy")
    >>> @toys.register("three")
    ... def three() -> int:
    ...     return 3
    >>> toys.build({"name": "three"})
    3
    >>> toys.resolve("three"), toys.resolve(7)  # a name, a mapping, or something already built
    (3, 7)
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        #: how a list/tuple spec becomes a component (scale schedules: a list of sizes); None: lists are not specs
        self.from_sequence: Callable[[Sequence[Any]], T] | None = None

    # -- registration -------------------------------------------------------------------------------------------
    @overload
    def register(self, name: str) -> Callable[[F], F]: ...
    @overload
    def register(self, name: str, factory: F) -> F: ...

    def register(self, name: str, factory: F | None = None) -> Any:
        """Register ``factory`` under ``name``; usable as ``@REG.register("name")`` or ``REG.register("name", f)``."""
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} names must be non-empty strings, got {name!r}")

        def add(obj: F) -> F:
            module = getattr(obj, "__module__", None) or "<unknown>"
            if name in self._entries:
                first = self._entries[name]
                raise DuplicateComponentError(
                    f"{self.kind} {name!r} is already registered by {first.module} ({first.origin}); "
                    f"refusing the second registration from {module}. Pick another name."
                )
            origin = BUILTIN if module == "varkit" or module.startswith("varkit.") else module.split(".")[0]
            self._entries[name] = Entry(name=name, factory=obj, module=module, origin=origin)
            return obj

        return add if factory is None else add(factory)

    def set_origin(self, name: str, origin: str) -> None:
        """Record which plugin registered ``name`` (called by the plugin loader)."""
        entry = self._entries[name]
        self._entries[name] = Entry(entry.name, entry.factory, entry.module, origin)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and for plugins that replace their own entries on reload)."""
        self._entries.pop(self._check(name).name)

    # -- lookup -------------------------------------------------------------------------------------------------
    def _check(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            known = sorted(self._entries)
            close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownComponentError(
                f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(known) or '(none)'}."
            ) from None

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered under ``name``."""
        return self._check(name).factory

    def entry(self, name: str) -> Entry[T]:
        return self._check(name)

    def build(self, spec: str | Mapping[str, Any], /, **overrides: Any) -> T:
        """Build from ``"name"`` or ``{"name": ..., **kwargs}`` (a plain mapping or an OmegaConf node).

        Keys are the factory's argument names; unknown keys are reported with the accepted ones.
        """
        if isinstance(spec, str):
            name, kwargs = spec, {}
        else:
            kwargs = {str(k): v for k, v in spec.items()}
            if "name" not in kwargs:
                raise ValueError(f"a {self.kind} spec needs a 'name' key, got keys {sorted(kwargs)}")
            name = kwargs.pop("name")
        kwargs.update(overrides)
        factory = self.get(name)
        try:
            return factory(**kwargs)
        except TypeError as err:
            import inspect

            try:
                params = [p for p in inspect.signature(factory).parameters if p not in ("self", "args", "kwargs")]
            except (TypeError, ValueError):
                raise err from None
            unknown = sorted(set(kwargs) - set(params))
            if unknown:
                raise TypeError(
                    f"{self.kind} {name!r} does not take {', '.join(unknown)}; it accepts: {', '.join(params)}"
                ) from None
            raise

    def resolve(self, spec: Any, /) -> T:
        """The one way a config entry becomes a component: a registered name, a ``{"name": ..., **kwargs}`` mapping
        (a plain dict or an OmegaConf node), a list where this kind has a literal form (:attr:`from_sequence`), or an
        object that is already built (returned as it is)."""
        if isinstance(spec, (str, Mapping)):
            return self.build(spec)
        if self.from_sequence is not None and isinstance(spec, Sequence) and not isinstance(spec, bytes):
            return self.from_sequence(list(spec))  # list(): an OmegaConf ListConfig becomes plain
        return spec  # already built: the caller passed the component itself

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


QUANTIZERS: Registry[MultiScaleQuantizer] = Registry("quantizer")
SCALE_SCHEDULES: Registry[Scales] = Registry("scale schedule")
ATTENTION_KERNELS: Registry[AttentionKernel] = Registry("attention kernel")
CFG_SCHEDULES: Registry[GuidanceSchedule] = Registry("guidance schedule")
FEATURE_EXTRACTORS: Registry[FeatureExtractor] = Registry("feature extractor")
#: training-free sampling speed-ups (:mod:`varkit.sampling.speedups`), switched on by name in ``sampling.speedups``
SAMPLERS: Registry[Speedup] = Registry("speed-up")
#: training objectives of the transformer stage (:mod:`varkit.objectives`), selected by the ``objective`` group
OBJECTIVES: Registry[Objective] = Registry("training objective")
#: named model shapes (``var_d16`` ...): ``varkit.create_model`` and the ``model=`` config options
MODELS: Registry[VAR] = Registry("model")
#: named tokenizers (``vqvae_f16`` ...): ``varkit.create_tokenizer`` and the ``tokenizer=`` config options
TOKENIZERS: Registry[VQVAE] = Registry("tokenizer")

#: every registry by its config-group name, in the order ``varkit list`` prints them
REGISTRIES: dict[str, Registry[Any]] = {
    "quantizer": QUANTIZERS,
    "schedule": SCALE_SCHEDULES,
    "attention": ATTENTION_KERNELS,
    "cfg_schedule": CFG_SCHEDULES,
    "evaluator": FEATURE_EXTRACTORS,
    "speedup": SAMPLERS,
    "objective": OBJECTIVES,
}

#: the preset registries by config group: their config node holds the full arguments and ``name`` is the preset it
#: starts from (``varkit.models.presets`` registers the built-ins and generates the Hydra options from them)
PRESETS: dict[str, Registry[Any]] = {"model": MODELS, "tokenizer": TOKENIZERS}
