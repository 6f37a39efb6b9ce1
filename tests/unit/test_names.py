"""Self-explanatory names, one function per concept, and no silent fallbacks."""

from __future__ import annotations

import pytest
import torch

import varkit
from varkit.attention.eager import EagerAttention
from varkit.hardware import resolve_device
from varkit.nn.adaln import AdaLNModulation


def test_shared_adaln_offset_has_a_name_and_old_checkpoints_still_load() -> None:
    modulation = AdaLNModulation(8, 16, shared=True)
    assert list(dict(modulation.named_parameters())) == ["block_offset"]
    legacy = {"gss": torch.ones(1, 1, 6, 16)}  # the key varkit wrote before the rename
    modulation.load_state_dict(legacy)
    assert torch.equal(modulation.block_offset, torch.ones(1, 1, 6, 16))


def test_an_unnamed_kernel_is_an_error_not_a_guess() -> None:
    class Anonymous(EagerAttention):
        name = ""

    with pytest.raises(ValueError, match="no registry name"):
        varkit.create_model("var_tiny", attention=Anonymous())
    named = varkit.create_model("var_tiny", attention=EagerAttention())
    assert named.config["attention"] == "eager"


def test_one_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
