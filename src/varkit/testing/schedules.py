"""Conformance kit for scale schedules (VAR Sec. 3.1: token maps r_1..r_K) and guidance schedules.

* :func:`check_scale_schedule` — a schedule (a :class:`~varkit.contracts.Scales` or a factory returning one)
  is made of positive ints, grows strictly from coarse to fine, has consistent derived quantities, round-trips
  through its plain-data form, and accepts exactly its own last size as the tokenizer's latent size.
* :func:`check_cfg_schedule` — a guidance schedule returns finite floats for every scale of every length tried,
  and zero guidance for ``cfg=0`` (so CFG scale 0 equals conditional sampling).

>>> from varkit import SCALE_SCHEDULES, CFG_SCHEDULES
>>> check_scale_schedule(SCALE_SCHEDULES.get("var_256")).total_tokens
680
>>> check_cfg_schedule(CFG_SCHEDULES.build("linear"))
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from varkit.contracts import GuidanceSchedule, InvalidScalesError, Scales

__all__ = ["check_cfg_schedule", "check_scale_schedule"]


def check_scale_schedule(scales_or_factory: Scales | Callable[[], Scales], **factory_kwargs: Any) -> Scales:
    """Check a scale schedule; a factory is called (twice, with ``factory_kwargs``) and must be deterministic.

    Returns the checked :class:`Scales`; raises ``AssertionError`` on any violation.
    """
    if isinstance(scales_or_factory, Scales):
        scales = scales_or_factory
    else:
        scales = scales_or_factory(**factory_kwargs)
        again = scales_or_factory(**factory_kwargs)
        if again != scales:
            raise AssertionError(f"the schedule factory is not deterministic: {scales!r} then {again!r}")
    if not isinstance(scales, Scales):
        raise AssertionError(f"a scale schedule must produce a varkit.Scales, got {type(scales).__name__}")
    sizes = scales.sizes
    if not sizes:
        raise AssertionError("a scale schedule needs at least one scale")
    for h, w in sizes:
        if not (isinstance(h, int) and isinstance(w, int)) or isinstance(h, bool) or isinstance(w, bool):
            raise AssertionError(f"scale sizes must be ints, got {(h, w)!r}")
        if h < 1 or w < 1:
            raise AssertionError(f"scale sizes must be positive, got {(h, w)!r}")
    for (h0, w0), (h1, w1) in itertools.pairwise(sizes):
        if h1 < h0 or w1 < w0 or h1 * w1 <= h0 * w0:
            raise AssertionError(f"scales must grow strictly: {h0}x{w0} then {h1}x{w1}")

    # derived quantities agree with each other
    counts = [h * w for h, w in sizes]
    if list(scales.token_counts) != counts or scales.total_tokens != sum(counts):
        raise AssertionError(f"token counts {scales.token_counts} disagree with sizes {sizes}")
    if scales.offsets[0] != 0 or scales.offsets[-1] != scales.total_tokens or len(scales.offsets) != len(sizes) + 1:
        raise AssertionError(f"offsets {scales.offsets} do not span 0..{scales.total_tokens}")
    levels = scales.level_ids()
    if levels.shape != (scales.total_tokens,) or not torch.equal(
        torch.bincount(levels, minlength=len(sizes)), torch.tensor(counts)
    ):
        raise AssertionError("level_ids() does not repeat each scale index by its token count")
    for k in range(len(sizes)):
        span = scales.slice(k)
        if span.stop - span.start != counts[k] or not bool((levels[span] == k).all()):
            raise AssertionError(f"slice({k}) = {span} does not cover scale {k}")

    # plain-data round trip (configs and checkpoints store as_list())
    if Scales.of(scales.as_list()) != scales:
        raise AssertionError(f"Scales.of(as_list()) does not round-trip {scales.describe()}")

    # the last size is the tokenizer's latent size: accepted exactly, anything else refused
    h, w = scales.last
    if scales.validate_for_latent((h, w)) is not scales:
        raise AssertionError("validate_for_latent must return the schedule itself")
    if h == w and scales.validate_for_latent(h) is not scales:
        raise AssertionError("validate_for_latent must accept an int latent size for square schedules")
    for wrong in ((h + 1, w), (h, w + 1)):
        try:
            scales.validate_for_latent(wrong)
        except InvalidScalesError as err:
            if str(wrong[0]) not in str(err):
                raise AssertionError(f"validate_for_latent's message does not name the latent size: {err}") from err
        else:
            raise AssertionError(f"validate_for_latent accepted latent {wrong} for last scale {scales.last}")
    return scales


def check_cfg_schedule(
    schedule: GuidanceSchedule | Callable[[int, int, float], float],
    *,
    num_scales: Sequence[int] = (1, 2, 10, 13),
    cfgs: Sequence[float] = (0.0, 1.0, 1.5, 4.0),
) -> None:
    """Check a guidance schedule over every scale ``k`` of each ``num_scales``; raises ``AssertionError``."""
    if not callable(schedule):
        raise AssertionError(f"a guidance schedule must be callable, got {type(schedule).__name__}")
    for total in num_scales:
        for cfg in cfgs:
            for k in range(total):
                t = schedule(k, total, cfg)
                if isinstance(t, bool) or not isinstance(t, int | float):
                    raise AssertionError(f"t({k}, {total}, cfg={cfg}) must be a float, got {type(t).__name__}")
                if not math.isfinite(t):
                    raise AssertionError(f"t({k}, {total}, cfg={cfg}) = {t} is not finite")
                if cfg == 0.0 and t != 0.0:
                    raise AssertionError(f"t({k}, {total}, cfg=0) = {t}: guidance must vanish at cfg=0")
