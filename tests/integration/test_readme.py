"""The README's Python block runs as written, with tiny local weights in place of the release files.

The release files (``var_d16.pth``, ``vae_ch160v4096z32.pth``) are replaced by the parity fixture's weights in
the same official layout (``shared/fixtures/var_parity_a.pt``), written under the same file names; the conversion
gets the fixture's reference config (the release files need none). The few values tied to the full-size models
(class ids, the preset names built from scratch) are substituted, and each substitution must match the README
text, so a README edit that the test does not cover fails here.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import torch

import varkit

README = Path(__file__).resolve().parents[2] / "README.md"

#: README text -> what the test runs instead (tiny shapes that fit the fixture and a CPU test run)
SUBSTITUTIONS = {
    "torch.tensor([207, 360])": "torch.tensor([3, 7])",  # the fixture's model has 10 classes
    'varkit.create_model("var_d16", depth=20)': 'varkit.create_model("var_tiny", depth=1)',
    'varkit.create_tokenizer("vqvae_f16")': 'varkit.create_tokenizer("vqvae_tiny")',
}


def _python_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match, "README has no ```python block under '### Python'"
    return match.group(1)


def test_readme_python_block_runs(parity_fixture: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = _python_block()
    assert not re.search(r"^\s*from varkit", code, flags=re.MULTILINE), "the README imports from one place"
    assert re.search(r"^import .*\bvarkit\b", code, flags=re.MULTILINE)
    for original, replacement in SUBSTITUTIONS.items():
        assert original in code, f"README no longer contains {original!r}: update this test"
        code = code.replace(original, replacement)
    monkeypatch.chdir(tmp_path)
    torch.save(parity_fixture["var_state_dict"], tmp_path / "var_d16.pth")
    torch.save(parity_fixture["vae_state_dict"], tmp_path / "vae_ch160v4096z32.pth")
    convert = varkit.convert_official
    monkeypatch.setattr(varkit, "convert_official", functools.partial(convert, config=parity_fixture["config"]))

    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)

    images = namespace["images"]
    size = parity_fixture["config"]["image_size"]
    assert images.shape == (2, 3, size, size) and images.min() >= 0.0 and images.max() <= 1.0
    assert (tmp_path / "weights" / "var_d16").is_dir() and (tmp_path / "weights" / "vqvae_f16").is_dir()
    assert namespace["fresh"].depth == 1 and namespace["tokenizer"].quantizer.codebook_size == 64
