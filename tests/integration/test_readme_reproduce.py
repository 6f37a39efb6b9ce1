"""The README's "Reproduce a paper number" commands, run as written on tiny models.

The released weights, the FID Inception file and ADM's reference batch are not available here, so the commands of
the README's bash block are run with these substitutions only: the official-format parity fixture's weights (split
into a VQ-VAE and a VAR file, with `--set` for the fixture's tiny VQ-VAE) for the released `.pth` files,
`trainer=ddp_cpu` for `trainer=ddp`, the seeded `tiny` extractor for `inception_fid`, a small ADM-layout reference
`.npz` for ADM's, and 2 images per class of the fixture's 10 classes instead of 50.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from varkit.config import config_dir

README = Path(__file__).resolve().parents[2] / "README.md"
FIXTURE_VAE = ["--set", "ch=32", "--set", "V=64", "--set", "Cvae=8", "--set", "share_quant_resi=4"]
FIXTURE_VAE += ["--set", "patch_nums=[1,2,3,4]", "--set", "image_size=64"]


def readme_commands() -> list[list[str]]:
    """The commands of the first bash block of the README section, continuation lines joined, comments dropped."""
    text = README.read_text()
    section = text.split("## Reproduce a paper number", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "the README section has no bash block"
    lines = [line for line in block.group(1).replace("\\\n", " ").splitlines() if line.strip()]
    return [shlex.split(line) for line in lines if not line.lstrip().startswith("#")]


@pytest.mark.slow
@pytest.mark.ddp
def test_readme_reproduce_commands_run_on_tiny_converted_weights(parity_fixture: dict, tmp_path: Path) -> None:
    torch.save({k: v.float() for k, v in parity_fixture["vae_state_dict"].items()}, tmp_path / "vae.pth")
    torch.save({k: v.float() for k, v in parity_fixture["var_state_dict"].items()}, tmp_path / "var.pth")
    size = int(parity_fixture["config"]["image_size"])
    images = np.random.default_rng(0).integers(0, 256, size=(24, size, size, 3), dtype=np.uint8)
    np.savez(tmp_path / "reference.npz", arr_0=images)  # ADM layout; TF statistics absent, so computed from images
    commands = readme_commands()
    assert [c[:2] for c in commands] == [["varkit", "convert"], ["varkit", "convert"], ["varkit", "eval"]]

    def substitute(argument: str) -> list[str]:
        if argument == "vae_ch160v4096z32.pth":
            return [str(tmp_path / "vae.pth")]
        if argument == "var_d16.pth":
            return [str(tmp_path / "var.pth")]
        if argument == "trainer=ddp":
            return ["trainer=ddp_cpu"]
        if argument == "evaluator=inception_fid":
            return ["evaluator=tiny"]
        if argument.startswith("evaluator.weights="):
            return []
        if argument.startswith("reference.path="):
            return [f"reference.path={tmp_path / 'reference.npz'}"]
        if argument == "sampling=var_paper" and not (config_dir() / "sampling" / "var_paper.yaml").is_file():
            # before the sampling config group exists, the same protocol is eval.yaml's generate.sampling
            return ["generate.sampling.cfg=1.5", "generate.sampling.top_k=900", "generate.sampling.top_p=0.96"]
        return [argument]

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "VARKIT_HOME": str(tmp_path)}
    for command in commands:
        args = [a for argument in command[1:] for a in substitute(argument)]
        if args[0] == "convert" and args[1].endswith("vae.pth"):
            args += FIXTURE_VAE  # the fixture's VQ-VAE is tiny: its shape arguments are not the released defaults
        if args[0] == "eval":
            args += ["generate.per_class=2", "generate.chunk_size=5", "generate.batch_size=5", "metrics.kid_subsets=5"]
        result = subprocess.run(
            [sys.executable, "-m", "varkit", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, " ".join(args) + "\n" + result.stdout[-3000:] + result.stderr[-3000:]

    run = tmp_path / "runs" / "eval-var-d16"
    result = json.loads((run / "eval.json").read_text())
    metrics, timing = result["metrics"], result["timing"]
    assert metrics["num_samples"] == 20 and metrics["fid"] > 0 and metrics["sfid"] > 0
    assert metrics["inception_score"] >= 1.0 and metrics["num_reference"] == 24
    assert timing["settings"]["world_size"] == 2 and timing["settings"]["top_k"] == 900
    assert timing["settings"]["top_p"] == 0.96 and timing["settings"]["cfg"] == 1.5
    assert "| VAR | varkit-VAR-d16 |" in (run / "table.md").read_text()
    with np.load(run / "samples.npz") as samples:
        assert samples["arr_0"].shape == (20, size, size, 3)
