"""Export a trained tokenizer (VAR paper, Sec. 4: the frozen VQVAE that the transformer stage reads).

The export is a :mod:`varkit.checkpoint.io` directory — ``config.json`` (the :func:`build_vqvae` arguments) and
``model.safetensors`` — which ``varkit data tokenize``, the transformer stage and ``varkit convert`` load with
:func:`varkit.checkpoint.io.from_pretrained`. It holds the VQVAE only (no discriminator, no optimiser state).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from varkit.checkpoint.io import save_pretrained
from varkit.models.vqvae import VQVAE, build_vqvae

__all__ = ["export_tokenizer", "export_tokenizer_checkpoint", "tokenizer_from_checkpoint"]

logger = logging.getLogger(__name__)


def export_tokenizer(vae: VQVAE, directory: str | Path) -> Path:
    """Write ``vae`` (float32 weights) to ``directory`` as ``config.json`` + ``model.safetensors``."""
    if vae.config is None:
        raise ValueError("this VQVAE has no .config (build it with build_vqvae to make it exportable)")
    state_dtypes = {p.dtype for p in vae.parameters()}
    if state_dtypes != {torch.float32}:
        raise ValueError(f"export float32 weights (got {sorted(map(str, state_dtypes))}); undo decoder_to() first")
    return save_pretrained(vae, directory)


def tokenizer_from_checkpoint(checkpoint_path: str | Path) -> VQVAE:
    """The VQVAE of a Lightning checkpoint written by :class:`~varkit.lit.tokenizer.TokenizerModule` (eval mode)."""
    from varkit.safe_load import load_torch_file

    checkpoint = load_torch_file(checkpoint_path, what="training checkpoint")
    params = checkpoint.get("hyper_parameters") or {}
    missing = [k for k in ("tokenizer", "quantizer", "schedule") if k not in params]
    if missing:
        raise ValueError(f"{checkpoint_path} is not a tokenizer checkpoint (hyper-parameters lack {missing})")
    vae = build_vqvae(params["tokenizer"], params["quantizer"], params["schedule"])
    prefix = "vae."
    state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    vae.load_state_dict(state, strict=True)
    return vae.eval()


def export_tokenizer_checkpoint(checkpoint_path: str | Path, directory: str | Path) -> Path:
    """Export the VQVAE of a Lightning tokenizer checkpoint to ``directory``."""
    return export_tokenizer(tokenizer_from_checkpoint(checkpoint_path), directory)
