"""Save and load varkit models as a directory: ``config.json`` (plain data) + ``model.safetensors`` (weights).

The config names the model kind and holds only constructor data, so a directory written today loads after
refactors, and loading never unpickles code. Supported kinds:

* ``"var"`` — :class:`varkit.models.var.VAR`, config = its constructor arguments (:attr:`VAR.config`);
* ``"vqvae"`` — :class:`varkit.models.vqvae.VQVAE`, config = :func:`varkit.models.vqvae.build_vqvae` arguments
  (``tokenizer``, ``quantizer``, ``scales``).

Also :func:`convert_official`, the function behind ``varkit convert``: official ``.pth`` files (or the parity
fixture) to varkit directories.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "convert_official",
    "from_pretrained",
    "load_pretrained",
    "model_kind",
    "read_config",
    "save_pretrained",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


def model_kind(model: nn.Module) -> str:
    """``"var"`` or ``"vqvae"`` for a varkit model (by class)."""
    from varkit.models.var import VAR
    from varkit.models.vqvae import VQVAE

    if isinstance(model, VAR):
        return "var"
    if isinstance(model, VQVAE):
        return "vqvae"
    raise TypeError(f"save_pretrained supports varkit VAR and VQVAE models, got {type(model).__name__}")


def _plain(value: Any) -> Any:
    """Config values as JSON data (tuples become lists; anything else non-JSON is an error)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"config values must be plain data (numbers, strings, lists, dicts), got {type(value).__name__}")


def save_pretrained(model: nn.Module, directory: str | Path, *, config: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` to ``directory`` (created if needed); returns the directory.

    ``config`` defaults to ``model.config``; a VQ-VAE without one needs its :func:`build_vqvae` arguments here.
    Weights keep their dtype.
    """
    kind = model_kind(model)
    if config is None:
        config = getattr(model, "config", None)
        if config is None:
            raise ValueError(f"this {kind} model has no .config; pass config= (its constructor arguments)")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {name: value.detach().contiguous().cpu() for name, value in model.state_dict().items()}
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"kind": kind})
    document = {"kind": kind, "format_version": FORMAT_VERSION, "config": _plain(config)}
    (out / CONFIG_FILE).write_text(json.dumps(document, indent=2) + "\n")
    logger.info("saved %s (%d tensors) to %s", kind, len(tensors), out)
    return out


def read_weights(path: str | Path, *, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file; a missing, truncated or foreign file (e.g. a renamed pickle) is one
    :class:`~varkit.errors.ConfigError` sentence — safetensors never unpickles anything."""
    from safetensors import SafetensorError

    from varkit.errors import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: the model directory has no weights")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise ConfigError(f"{path} is not a readable safetensors file (truncated or another format: {err})") from None


def read_config(directory: str | Path) -> dict[str, Any]:
    """The ``config.json`` document of a saved model: ``{"kind", "format_version", "config"}``."""
    from varkit.errors import ConfigError

    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: not a varkit model directory")
    try:
        document = json.loads(path.read_text())
    except (ValueError, OSError) as err:
        raise ConfigError(f"{path} is not readable JSON ({err})") from None
    if (
        not isinstance(document, dict)
        or document.get("kind") not in ("var", "vqvae")
        or not isinstance(document.get("config"), dict)
    ):
        raise ConfigError(f"{path} is not a varkit model config (needs 'kind' in var/vqvae and a 'config' mapping)")
    return document


def _build(kind: str, config: Mapping[str, Any]) -> nn.Module:
    if kind == "var":
        from varkit.models.var import VAR

        return VAR(**dict(config))
    from varkit.models.vqvae import build_vqvae

    return build_vqvae(**dict(config))


def from_pretrained(
    directory: str | Path,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    expect: str | None = None,
) -> nn.Module:
    """Load a model saved by :func:`save_pretrained`, in eval mode.

    ``dtype`` casts floating weights (``None`` keeps the stored dtype); ``expect`` (``"var"``/``"vqvae"``) refuses
    a directory of the other kind.
    """
    from varkit.errors import ConfigError

    document = read_config(directory)
    kind = document["kind"]
    if expect is not None and kind != expect:
        raise ConfigError(f"{directory} holds a {kind!r} model, expected {expect!r}")
    try:
        model = _build(kind, document["config"])
    except TypeError as err:
        raise ConfigError(
            f"{Path(directory) / CONFIG_FILE} has arguments the {kind} model does not take: {err}"
        ) from None
    weights = read_weights(Path(directory) / WEIGHTS_FILE, device=device)
    # assign=True keeps the stored dtypes (a bf16 save loads as bf16) instead of copying into fresh fp32 tensors
    model.load_state_dict(weights, strict=True, assign=True)
    model.to(device)
    if dtype is not None:
        model.to(dtype)
    return model.eval()


load_pretrained = from_pretrained


def _load_pth(path: str | Path) -> Any:
    from varkit.safe_load import load_torch_file

    return load_torch_file(path, what="weights file")


def convert_official(
    source: str | Path,
    output: str | Path,
    *,
    kind: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Convert official VAR/VQVAE weights to varkit directories; returns ``{kind: directory}`` written.

    ``source`` is either the parity fixture format (a dict with ``config``, ``var_state_dict``,
    ``vae_state_dict``) — written to ``output/var`` and ``output/vqvae`` — or a released ``var_d*.pth`` /
    ``vae_ch160v4096z32.pth`` state dict, written to ``output``. ``kind`` forces ``"var"``/``"vqvae"`` for a bare
    state dict (detected from its keys otherwise); ``config`` supplies reference-named arguments (for VAR they
    are inferred from the weights when omitted).
    """
    from varkit.checkpoint.var import infer_official_var_config, var_from_official
    from varkit.errors import ConfigError

    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"the output {out} is a file; give a directory to write the converted model into")
    loaded = _load_pth(source)
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{source} does not hold a state dict or a fixture mapping")
    if "pytorch-lightning_version" in loaded or ("state_dict" in loaded and "hyper_parameters" in loaded):
        raise ConfigError(
            f"{source} is a Lightning training checkpoint (a varkit .ckpt), not official VAR/VQVAE weights: varkit "
            "runs export their models themselves (<run>/model for the transformer, <run>/tokenizer for the "
            "tokenizer); use those directories"
        )
    written: dict[str, Path] = {}
    if "var_state_dict" in loaded or "vae_state_dict" in loaded:
        reference_config = {**dict(loaded.get("config", {})), **dict(config or {})}
        if "var_state_dict" in loaded:
            model = var_from_official(loaded["var_state_dict"], reference_config)
            written["var"] = save_pretrained(model, out / "var")
        if "vae_state_dict" in loaded:
            written["vqvae"] = _convert_vqvae(loaded["vae_state_dict"], reference_config, out / "vqvae")
        return written
    state = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ConfigError(f"{source} holds no tensors: not an official VAR/VQVAE state dict")
    detected = kind or ("var" if any(k.startswith("blocks.") for k in state) else "vqvae")
    if detected == "var":
        reference_config = {**infer_official_var_config(state), **dict(config or {})}
        written["var"] = save_pretrained(var_from_official(state, reference_config), out)
    else:
        written["vqvae"] = _convert_vqvae(state, dict(config or {}), out)
    return written


def _convert_vqvae(state: Mapping[str, torch.Tensor], config: Mapping[str, Any], output: Path) -> Path:
    """Import with :mod:`varkit.checkpoint.vqvae` and save with the model's ``config`` (build_vqvae arguments)."""
    from varkit.checkpoint.vqvae import vqvae_from_official

    return save_pretrained(vqvae_from_official(state, config), output)
