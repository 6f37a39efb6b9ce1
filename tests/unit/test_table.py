"""The comparison-table renderer: exact text, literature rows from config, relative times."""

from __future__ import annotations

import pytest
import yaml

from varkit.config import config_dir
from varkit.evaluation.table import ComparisonRow, relative_times, render_table, rows_from_config

PAPER_TABLE = """\
| Type | Model | FID↓ | IS↑ | Time |
|---|---|---|---|---|
| GAN | BigGAN | 8.43 | 177.9 | — |
| Diff. | ADM | 23.24 | 101.0 | — |
| Diff. | DiT-XL/2 | 3.04 | 240.8 | 81 |
| Mask. | MaskGIT | 7.32 | 156.0 | 0.5† |
| AR | VQGAN | 26.52 | 66.8 | 25† |
| VAR | VAR-d36 | 2.63 | 303.2 | 1 |
"""


def _literature() -> dict:
    return yaml.safe_load((config_dir() / "literature" / "var_paper_512.yaml").read_text())


def test_literature_config_renders_the_papers_512_table_exactly() -> None:
    rows = rows_from_config(_literature()["rows"])
    assert render_table(rows) == PAPER_TABLE


def test_measured_rows_get_time_relative_to_the_baseline_and_footnotes() -> None:
    rows = rows_from_config(_literature()["rows"])
    rows.append(ComparisonRow("VAR", "varkit-d16", 12.3456, 98.765, seconds_per_image=0.6))
    rows.append(ComparisonRow("VAR", "varkit-d6", None, None, seconds_per_image=0.15))
    timed = relative_times(rows, baseline="VAR-d36", baseline_seconds_per_image=0.3)
    text = render_table(timed, footnotes=["Literature: VAR paper, Table 2."])
    assert text == PAPER_TABLE + (
        "| VAR | varkit-d16 | 12.35 | 98.8 | 2 |\n"
        "| VAR | varkit-d6 | — | — | 0.5 |\n"
        "\n"
        "Literature: VAR paper, Table 2.\n"
    )
    # a measured baseline: itself 1, the others relative to it; literature rows keep their published times
    own = relative_times(rows, baseline="varkit-d6")
    assert [r.time for r in own[-2:]] == [pytest.approx(4.0), pytest.approx(1.0)]
    assert own[2].time == 81


def test_relative_times_errors_are_explicit() -> None:
    rows = rows_from_config(_literature()["rows"])
    with pytest.raises(ValueError, match="not a row"):
        relative_times(rows, baseline="nosuch")
    with pytest.raises(ValueError, match="no measured seconds"):
        relative_times(rows, baseline="VAR-d36")
    with pytest.raises(ValueError, match="unknown keys"):
        rows_from_config([{"type": "GAN", "model": "x", "fid": 1.0, "inception_score": 2.0, "speed": 3}])
