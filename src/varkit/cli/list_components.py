"""``varkit list``: every registered component, by kind, with its origin (built-in or plugin)."""

from __future__ import annotations

import argparse
import json

HELP = (
    "list registered components (quantizers, scale schedules, attention kernels, guidance schedules, evaluators, "
    "training objectives)"
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "kind", nargs="?", help="only this kind (quantizer, schedule, attention, cfg_schedule, evaluator, objective)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    import varkit
    import varkit.evaluation  # noqa: F401  (registers the feature extractors)
    from varkit.registry import REGISTRIES

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
        print(f"{kind} ({registry.kind}s, config group `{kind}/`):")
        width = max((len(n) for n in registry.names()), default=0)
        for entry in registry.entries():
            print(f"  {entry.name:<{width}}  [{entry.origin}]  {entry.summary}")
    return 0
