"""Generator directories: a trained transformer with a reference to its tokenizer, written and loaded.

Plain PyTorch (no Lightning, no Hydra), so notebooks and scripts can use it directly::

    from varkit.checkpoint.generator import load_generator
    from varkit.image_io import save_grid
    var, vqvae, info = load_generator("runs/var-demo/model")

A *generator directory* is either

* ``<run>/model/`` written at the end of ``varkit train``: the transformer (``config.json`` of kind ``var`` +
  ``model.safetensors``, EMA weights when EMA was on) and ``tokenizer.json`` pointing to the tokenizer directory
  (relative paths are relative to the generator directory); optionally ``classes.json``; or
* the output of ``varkit convert`` on an official pair: ``var/`` and ``vqvae/`` sub-directories.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from varkit.errors import ConfigError

__all__ = ["load_generator", "write_generator"]

logger = logging.getLogger(__name__)

TOKENIZER_REFERENCE_FILE = "tokenizer.json"
CLASSES_FILE = "classes.json"


def write_generator(
    model: nn.Module,
    directory: str | Path,
    tokenizer_dir: str | Path,
    *,
    classes: Sequence[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Export a transformer for ``varkit sample``: weights + config, and a reference to its tokenizer."""
    from varkit.checkpoint.io import save_pretrained

    directory = Path(directory)
    save_pretrained(model, directory)
    # relative first: a run folder moved together with its tokenizer keeps working; the absolute path is the
    # fallback for a generator copied elsewhere on the same machine
    absolute = Path(tokenizer_dir).resolve()
    try:
        relative = os.path.relpath(absolute, directory.resolve())
    except ValueError:  # another drive (Windows)
        relative = str(absolute)
    reference = {"path": relative, "absolute_path": str(absolute), **(extra or {})}
    (directory / TOKENIZER_REFERENCE_FILE).write_text(json.dumps(reference, indent=2) + "\n")
    if classes is not None:
        (directory / CLASSES_FILE).write_text(json.dumps({n: i for i, n in enumerate(classes)}, indent=1) + "\n")
    return directory


def _referenced_tokenizer(root: Path, reference: Path) -> Path:
    """The tokenizer directory a ``tokenizer.json`` names (relative to the generator directory, else absolute)."""
    try:
        document = json.loads(reference.read_text())
        paths = [str(document["path"]), *([str(document["absolute_path"])] if "absolute_path" in document else [])]
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{reference} is not a valid tokenizer reference ({err}); pass tokenizer_dir=...") from None
    candidates = [root / Path(p).expanduser() for p in paths]  # an absolute path stays absolute under `/`
    for candidate in candidates:
        if (candidate / "config.json").is_file() or (candidate / "tokenizer.json").is_file():
            return candidate
    raise ConfigError(
        f"the tokenizer of {root} is not at {candidates[0]} (the path {reference.name} records): it was moved or "
        "deleted; pass its directory with tokenizer_dir=<path>"
    )


def load_generator(
    path: str | Path,
    *,
    tokenizer: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """Load ``(VAR, VQVAE, info)`` in eval mode from a generator directory (see module docstring).

    ``tokenizer`` overrides the referenced tokenizer directory. ``info`` holds ``classes`` (names, or ``None``)
    and the directories used.
    """
    from varkit.checkpoint.io import CONFIG_FILE, from_pretrained
    from varkit.checkpoint.tokenizer_source import load_tokenizer

    root = Path(path).expanduser()
    if (root / CONFIG_FILE).is_file():
        var_dir = root
        if tokenizer is None:
            reference = root / TOKENIZER_REFERENCE_FILE
            if not reference.is_file():
                raise ConfigError(f"{root} has no {TOKENIZER_REFERENCE_FILE}; pass the tokenizer directory")
            tokenizer = _referenced_tokenizer(root, reference)
    elif (root / "var" / CONFIG_FILE).is_file():
        var_dir = root / "var"
        tokenizer = tokenizer if tokenizer is not None else root / "vqvae"
    else:
        raise ConfigError(f"{root} is not a generator directory (no config.json, no var/ sub-directory)")
    var = from_pretrained(var_dir, expect="var", device=device)
    vqvae = load_tokenizer(tokenizer, device=device)
    if var.scales != vqvae.scales:
        raise ConfigError(f"the transformer in {var_dir} and the tokenizer {tokenizer} use different scales")
    classes = None
    for candidate in (root / CLASSES_FILE, var_dir / CLASSES_FILE):
        if candidate.is_file():
            mapping = json.loads(candidate.read_text())
            classes = [name for name, _ in sorted(mapping.items(), key=lambda item: item[1])]
            break
    return var, vqvae, {"classes": classes, "var_dir": str(var_dir), "tokenizer_dir": str(tokenizer)}
