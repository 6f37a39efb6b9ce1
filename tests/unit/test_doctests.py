"""Docs that run: every ``>>>`` example in ``src/varkit`` is executed (docs/architecture.md, "Docs that run").

Modules are found by walking the package, so a new docstring example is tested without registering it here; the
only modules skipped are those that need hardware or packages a CPU test run does not have (each with a reason).
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil

import pytest

import varkit

#: module -> why its examples cannot run on a CPU-only test machine
SKIPPED: dict[str, str] = {
    "varkit.attention.flash": "needs the flash-attn package and a CUDA device",
}


def _modules_with_examples() -> list[str]:
    names = [varkit.__name__]
    names += [info.name for info in pkgutil.walk_packages(varkit.__path__, prefix="varkit.")]
    found = []
    for name in sorted(names):
        if name.endswith("__main__"):
            continue
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        if origin and origin.endswith(".py"):
            with open(origin, encoding="utf-8") as handle:
                if ">>>" in handle.read():
                    found.append(name)
    return found


MODULES = _modules_with_examples()


def test_the_documented_modules_are_found() -> None:
    for name in (
        "varkit.registry",
        "varkit.contracts",
        "varkit.quantizers.msvq",
        "varkit.evaluation",
        "varkit.cli.overrides",
        "varkit.models.presets",
    ):
        assert name in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    if name in SKIPPED:
        pytest.skip(SKIPPED[name])
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, name) if t.examples]
    assert tests, f"{name} mentions '>>>' but no example was collected"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name} (output above)"
