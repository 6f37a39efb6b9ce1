"""The frozen tokenizer of the transformer stage (VAR paper, Sec. 3: stage two trains on a fixed VQ-VAE's tokens).

A tokenizer is a directory written by :func:`varkit.checkpoint.save_pretrained` (``config.json`` of kind
``vqvae`` + ``model.safetensors``): the ``<run>/tokenizer/`` export of ``varkit train-tokenizer``, or the output of
``varkit convert`` for the official VQ-VAE (a directory with a ``vqvae/`` sub-directory is accepted too).
Its scale schedule, codebook size and code dimension are the single source of truth for the transformer.

No Lightning here: the sampling path uses this module too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from varkit.checkpoint.io import CONFIG_FILE, from_pretrained, read_config
from varkit.errors import ConfigError

__all__ = ["TOKENIZER_REFERENCE_FILE", "freeze", "load_tokenizer", "resolve_tokenizer_dir", "tokenizer_config"]

logger = logging.getLogger(__name__)

#: file in an exported transformer directory that points to its tokenizer
TOKENIZER_REFERENCE_FILE = "tokenizer.json"


def resolve_tokenizer_dir(path: str | Path) -> Path:
    """The directory holding the tokenizer's ``config.json``: ``path`` itself, ``path/tokenizer`` (a run
    directory), ``path/vqvae`` (a converted official pair), or the target of ``path/tokenizer.json``."""
    root = Path(path).expanduser()
    candidates = [root, root / "tokenizer", root / "vqvae"]
    for candidate in candidates:
        config = candidate / CONFIG_FILE
        if config.is_file() and _json(config).get("kind") == "vqvae":
            return candidate
    reference = root / TOKENIZER_REFERENCE_FILE
    if reference.is_file():
        return resolve_tokenizer_dir(_referenced_path(root, _json(reference)))
    raise ConfigError(
        f"no tokenizer found at {root}: expected a directory with a config.json of kind 'vqvae' (the "
        "<run>/tokenizer/ export of `varkit train-tokenizer`, or `varkit convert` output); train one first or set "
        "tokenizer.path"
    )


def _json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} is not readable JSON ({err})") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    return document


def _referenced_path(base: Path, reference: Mapping[str, Any]) -> Path:
    target = Path(str(reference["path"])).expanduser()
    return target if target.is_absolute() else (base / target)


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients: the tokenizer never trains in stage two."""
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def load_tokenizer(path: str | Path, *, device: torch.device | str = "cpu") -> nn.Module:
    """Load a frozen :class:`~varkit.models.vqvae.VQVAE` from a tokenizer directory (see module docstring)."""
    directory = resolve_tokenizer_dir(path)
    model = from_pretrained(directory, expect="vqvae", device=device)
    logger.info("loaded the frozen tokenizer from %s (scales %s)", directory, model.scales.describe())
    return freeze(model)


def tokenizer_config(path: str | Path) -> dict[str, Any]:
    """The stored build config of a tokenizer directory, without loading weights."""
    return read_config(resolve_tokenizer_dir(path))["config"]
