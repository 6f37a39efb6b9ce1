"""``varkit list``: every registered component, by kind, with its origin (built-in or plugin)."""

from __future__ import annotations

import argparse
import json

HELP = (
    "list registered components (quantizers, scale schedules, attention kernels, guidance schedules, evaluators,"
    " sampling speed-ups, training objectives) and the model/tokenizer presets"
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "kind",
        nargs="?",
        help="only this kind (quantizer, schedule, attention, cfg_schedule, evaluator, speedup, objective, model, "
        "tokenizer)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    import varkit
    import varkit.evaluation
    import varkit.models.presets  # noqa: F401  (registers the model and tokenizer presets)
    from varkit.registry import PRESETS
    from varkit.registry import REGISTRIES as COMPONENTS

    REGISTRIES = {**COMPONENTS, **PRESETS}

    kinds = [args.kind] if args.kind else list(REGISTRIES)
    for kind in kinds:
        if kind not in REGISTRIES:
            from varkit.cli import fail

            return fail(f"unknown kind {kind!r}; known kinds: {', '.join(REGISTRIES)}")
    if args.json:
        print(json.dumps({k: {e.name: e.origin for e in REGISTRIES[k].entries()} for k in kinds}, indent=2))
        return 0
    for kind in kinds:
        registry = REGISTRIES[kind]
        where = "named in `sampling.speedups`" if kind == "speedup" else f"config group `{kind}/`"
        print(f"{kind} ({registry.kind}s, {where}):")
        width = max((len(n) for n in registry.names()), default=0)
        for entry in registry.entries():
            print(f"  {entry.name:<{width}}  [{entry.origin}]  {entry.summary}")
    return 0
