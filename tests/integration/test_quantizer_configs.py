"""Each whole-codebook quantizer composes with every scale schedule in one override and conforms on it."""

from __future__ import annotations

import pytest
import torch

from varkit import QUANTIZERS
from varkit.config import config_dir, to_plain
from varkit.registry import SCALE_SCHEDULES

SCHEDULES = sorted(p.stem for p in (config_dir() / "schedule").glob("*.yaml"))


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("quantizer", ["msibq", "mssimvq", "msbsq"])
def test_quantizer_composes_with_schedule(compose_cfg, quantizer: str, schedule: str) -> None:
    from varkit.testing import check_quantizer

    cfg = compose_cfg("train_tokenizer", [f"quantizer={quantizer}", f"schedule={schedule}"])
    scales = SCALE_SCHEDULES.resolve(to_plain(cfg.schedule))
    spec = {k: v for k, v in dict(cfg.quantizer).items() if v is not None}
    spec.update(code_dim=4, num_scales=len(scales))
    if "codebook_size" in spec or quantizer != "msbsq":
        spec["codebook_size"] = 64
    if quantizer == "msbsq":
        spec["bits"] = 6
    torch.manual_seed(0)
    check_quantizer(QUANTIZERS.build(spec), scales, batch_size=1, atol=1e-4)
