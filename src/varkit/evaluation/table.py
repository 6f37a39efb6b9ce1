"""The comparison table of the VAR paper (Tian et al. 2024, Tables 1-2): ``Type | Model | FID↓ | IS↑ | Time``.

Literature rows come from config (``conf/literature/*.yaml``: figures as published, with the paper's own marks
such as ``†``); measured rows come from ``varkit eval`` results. ``Time`` is relative to a baseline row, as in the
paper (VAR = 1): a measured row's time is its seconds per image divided by the baseline's seconds per image, times
the baseline row's own relative time. When any row has an sFID (ADM's spatial FID; measured rows from
``varkit eval``), an ``sFID↓`` column follows ``FID↓``; rows without one show "—".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["ComparisonRow", "relative_times", "render_table", "rows_from_config"]

MISSING = "—"


@dataclass(frozen=True)
class ComparisonRow:
    """One table row. ``time``: relative inference time (``None`` → "—"); ``time_mark``: e.g. ``"†"``.

    ``seconds_per_image``: measured wall-clock time, for measured rows (used to compute ``time``). ``sfid``:
    spatial FID, when measured or published.
    """

    type: str
    model: str
    fid: float | None
    inception_score: float | None
    time: float | None = None
    time_mark: str = ""
    seconds_per_image: float | None = None
    sfid: float | None = None


def rows_from_config(rows: Iterable[Mapping[str, Any]]) -> list[ComparisonRow]:
    """Rows from plain config mappings with keys ``type, model, fid, inception_score, time, time_mark``."""
    allowed = {"type", "model", "fid", "inception_score", "time", "time_mark", "seconds_per_image", "sfid"}
    result = []
    for row in rows:
        unknown = set(row) - allowed
        if unknown:
            raise ValueError(
                f"unknown keys {sorted(unknown)} in comparison row {dict(row)}; allowed: {sorted(allowed)}"
            )
        result.append(ComparisonRow(**dict(row)))
    return result


def relative_times(
    rows: Sequence[ComparisonRow], *, baseline: str, baseline_seconds_per_image: float | None = None
) -> list[ComparisonRow]:
    """Fill ``time`` of rows that have ``seconds_per_image``, relative to the row named ``baseline``.

    The baseline's seconds per image are its measured ones, or ``baseline_seconds_per_image`` when the baseline is
    a literature row measured elsewhere on the same hardware (e.g. VAR-d36 timed with the official code). The
    baseline's relative time (``time``, default 1) scales the result, so literature and measured rows share a unit.
    """
    named = [row for row in rows if row.model == baseline]
    if not named:
        raise ValueError(f"time baseline {baseline!r} is not a row of the table ({[r.model for r in rows]})")
    reference = named[0]
    seconds = baseline_seconds_per_image if baseline_seconds_per_image is not None else reference.seconds_per_image
    if seconds is None or seconds <= 0:
        raise ValueError(
            f"time baseline {baseline!r} has no measured seconds per image; measure it or give its seconds per image"
        )
    unit = reference.time if reference.time is not None else 1.0
    return [
        replace(row, time=row.seconds_per_image / seconds * unit) if row.seconds_per_image is not None else row
        for row in rows
    ]


def _number(value: float | None, digits: int) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def _time(row: ComparisonRow) -> str:
    if row.time is None:
        return MISSING
    # published relative times are short numbers (0.5, 25, 81): keep three significant digits, no trailing zeros
    return f"{row.time:.3g}{row.time_mark}"


def render_table(rows: Sequence[ComparisonRow], *, footnotes: Sequence[str] = ()) -> str:
    """Markdown table ``| Type | Model | FID↓ | IS↑ | Time |`` (FID 2 decimals, IS 1 decimal), then footnotes.

    With an sFID in any row, the header is ``| Type | Model | FID↓ | sFID↓ | IS↑ | Time |`` (sFID 2 decimals).
    """
    with_sfid = any(row.sfid is not None for row in rows)
    header = ["Type", "Model", "FID↓", *(["sFID↓"] if with_sfid else []), "IS↑", "Time"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        sfid = [_number(row.sfid, 2)] if with_sfid else []
        cells = [row.type, row.model, _number(row.fid, 2), *sfid, _number(row.inception_score, 1), _time(row)]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if footnotes:
        text += "\n" + "\n".join(footnotes) + "\n"
    return text
