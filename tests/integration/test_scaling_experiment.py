"""``varkit scaling`` end to end on tiny data: one ``varkit train`` per depth, then the fit, plot and report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from var_stage_data import make_tiny_stage

from varkit.cli import scaling


@pytest.mark.slow
def test_scaling_command_trains_each_depth_and_fits(tmp_path: Path) -> None:
    stage = make_tiny_stage(tmp_path / "stage", train_per_class=4)
    parser = argparse.ArgumentParser()
    scaling.configure(parser)
    args = parser.parse_args(
        [
            "--root", str(tmp_path), "--depths", "1", "2", "--steps", "2", "--batch-size", "4",
            f"tokenizer.path={stage['tokenizer']}", f"data.train_urls={stage['tokens'] / 'train'}",
            f"data.val_urls={stage['tokens'] / 'val'}", f"export.classes={stage['demo'] / 'classes.json'}",
            "trainer=debug", "data.shuffle_buffer=8",
        ]
    )  # fmt: skip
    assert scaling.run(args) == 0
    report = json.loads((tmp_path / "runs" / "scaling" / "scaling.json").read_text())
    assert (tmp_path / "runs" / "scaling" / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    points = report["points"]
    assert [p["depth"] for p in points] == [1, 2] and [p["width"] for p in points] == [64, 128]
    assert points[0]["parameters"] < points[1]["parameters"]
    assert all(p["steps"] == 2 and p["tokens"] == 2 * 4 * (1 + 4 + 9 + 16) for p in points)
    assert all(p["compute"] == pytest.approx(6 * p["parameters"] * p["tokens"]) for p in points)
    assert abs(report["pearson_r"]) == pytest.approx(1.0)  # two points lie on a line
    # finished runs are reused: a second call only refits
    again = parser.parse_args([*map(str, ["--root", tmp_path, "--depths", 1, 2, "--steps", 2]), "--report-only"])
    assert scaling.run(again) == 0
    assert sorted(p.name for p in (tmp_path / "runs").glob("scaling-d*")) == ["scaling-d1-s2", "scaling-d2-s2"]
