"""The one way varkit reads ``torch.save`` files: ``weights_only=True``, errors as one sentence.

A ``torch.save`` file is a pickle; unpickling can run arbitrary code. ``torch.load(weights_only=True)`` only rebuilds
tensors and plain containers and refuses everything else — varkit relies on it for every ``.pth``/``.pt``/
``.ckpt`` it reads (the official weights in ``varkit convert``, evaluator weights, training checkpoints on resume),
and on torch >= 2.6, where it is also the default (so library code that omits the flag is safe too). A refused
file is reported in varkit's words: torch's own message suggests turning ``weights_only`` off, which is exactly
what a user must not do with a file they did not make.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from varkit.errors import ConfigError, UnsafeCheckpointError

__all__ = ["is_refusal", "load_torch_file", "refusal"]


def refusal(path: str | Path, what: str = "checkpoint") -> UnsafeCheckpointError:
    """The error for a file that holds pickled objects beyond tensors and plain data."""
    return UnsafeCheckpointError(
        f"the {what} {path} was refused: it holds pickled Python objects besides tensors and plain data (loading "
        "it could run code), and varkit only loads weights; re-save its state dict (plain tensors) and load that"
    )


def is_refusal(error: BaseException) -> bool:
    """Whether a ``weights_only`` load failed on a Python object it will not build (versus bytes that are no
    pickle at all, which torch reports through the same exception type)."""
    text = str(error)
    return "GLOBAL" in text or "Unsupported global" in text or "blocked" in text or "REDUCE" in text


def load_torch_file(path: str | os.PathLike[str], *, what: str = "checkpoint", map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with user-facing errors (missing, unreadable, unsafe file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"the {what} {path} does not exist" if not path.exists() else f"the {what} {path} is not a file"
        )
    try:
        return torch.load(str(path), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if is_refusal(err):
            raise refusal(path, what) from None
        raise ConfigError(f"the {what} {path} is not a torch.save file (it cannot be unpickled)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0].split(". ")[0][:160] if str(err).strip() else type(err).__name__
        raise ConfigError(f"the {what} {path} is unreadable or truncated ({first})") from None
