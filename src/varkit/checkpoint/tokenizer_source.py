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
from typing import Any, TypeVar

import torch
from torch import nn

from varkit.checkpoint.io import CONFIG_FILE, from_pretrained, read_config
from varkit.errors import ConfigError
from varkit.models.vqvae import VQVAE

__all__ = [
    "TOKENIZER_REFERENCE_FILE",
    "check_token_info",
    "freeze",
    "load_tokenizer",
    "resolve_tokenizer_dir",
    "tokenizer_config",
    "tokenizer_identity",
    "weights_digest",
]

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


M = TypeVar("M", bound=nn.Module)


def freeze(module: M) -> M:
    """Eval mode and no gradients: the tokenizer never trains in stage two."""
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def load_tokenizer(path: str | Path, *, device: torch.device | str = "cpu") -> VQVAE:
    """Load a frozen :class:`~varkit.models.vqvae.VQVAE` from a tokenizer directory (see module docstring)."""
    directory = resolve_tokenizer_dir(path)
    model = from_pretrained(directory, expect="vqvae", device=device)
    assert isinstance(model, VQVAE)  # from_pretrained(expect="vqvae") raises for anything else
    logger.info("loaded the frozen tokenizer from %s (scales %s)", directory, model.scales.describe())
    return freeze(model)


def tokenizer_config(path: str | Path) -> dict[str, Any]:
    """The stored build config of a tokenizer directory, without loading weights."""
    return read_config(resolve_tokenizer_dir(path))["config"]


def tokenizer_identity(tokenizer: torch.nn.Module, directory: str | Path) -> dict[str, Any]:
    """What identifies a loaded tokenizer: ``scales``, ``codebook_size``, ``code_dim`` and ``weights_sha256`` (of
    the ``model.safetensors`` in its ``directory``)."""
    from varkit.models.factory import tokenizer_facts

    facts = tokenizer_facts(tokenizer)  # type: ignore[arg-type]  # any loaded VQVAE-like tokenizer
    return {
        "scales": [[int(h), int(w)] for h, w in tokenizer.scales.sizes],  # type: ignore[union-attr]
        "codebook_size": facts["codebook_size"],
        "code_dim": facts["code_dim"],
        "weights_sha256": weights_digest(directory),
    }


def weights_digest(directory: str | Path) -> str:
    """SHA-256 of a tokenizer directory's ``model.safetensors`` (its identity in ``tokens.json``)."""
    import hashlib

    from varkit.checkpoint.io import WEIGHTS_FILE

    digest = hashlib.sha256()
    with (resolve_tokenizer_dir(directory) / WEIGHTS_FILE).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_token_info(
    info: dict[str, Any], tokenizer: torch.nn.Module, tokenizer_dir: str | Path, *, where: str = "the token shards"
) -> None:
    """One sentence if token shards (their ``tokens.json`` content ``info``) were not written by this tokenizer."""
    from varkit.errors import ConfigError

    own = tokenizer_identity(tokenizer, tokenizer_dir)
    scales = [list(map(int, s)) for s in info.get("scales", [])]
    if scales != own["scales"]:
        raise ConfigError(
            f"{where} were written with scales {scales}, but the tokenizer at {tokenizer_dir} uses {own['scales']}: "
            "re-run `varkit data tokenize` with it"
        )
    if int(info.get("codebook_size", -1)) != own["codebook_size"]:
        raise ConfigError(
            f"{where} hold indices of a {info.get('codebook_size')}-entry codebook, but the tokenizer at "
            f"{tokenizer_dir} has {own['codebook_size']} entries: re-run `varkit data tokenize` with it"
        )
    written_by = (info.get("tokenizer") or {}).get("weights_sha256")
    if written_by is None:
        logger.warning("%s record no tokenizer identity (written by an older varkit): not checked", where)
    elif written_by != own["weights_sha256"]:
        raise ConfigError(
            f"{where} were written by another tokenizer (weights {written_by[:12]}…) than the one at "
            f"{tokenizer_dir} ({own['weights_sha256'][:12]}…): re-run `varkit data tokenize` with it, or set "
            "tokenizer.path to the tokenizer that wrote them"
        )
