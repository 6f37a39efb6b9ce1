"""Built-in scale schedules (VAR paper, Sec. 3.1 and Table 1: token-map sizes 1..16 at 256px, 1..32 at 512px).

Every schedule is a registered function returning a validated :class:`~varkit.contracts.Scales`; configs pick one
by name (``schedule=var_256``) and the tokenizer checks the last size against its latent size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from varkit.contracts import InvalidScalesError, Scales
from varkit.registry import SCALE_SCHEDULES

__all__ = ["explicit", "geometric", "linear", "var_256", "var_512"]

# a plain list of sizes is a schedule spec too (``SCALE_SCHEDULES.resolve([1, 2, 3])``): the explicit schedule
SCALE_SCHEDULES.from_sequence = Scales.of


@SCALE_SCHEDULES.register("var_256")
def var_256() -> Scales:
    """The released VAR schedule for 256px images (16x16 latents): 1,2,3,4,5,6,8,10,13,16 (680 tokens)."""
    return Scales.of([1, 2, 3, 4, 5, 6, 8, 10, 13, 16])


@SCALE_SCHEDULES.register("var_512")
def var_512() -> Scales:
    """The released VAR schedule for 512px images (32x32 latents): 1,2,3,4,6,9,13,18,24,32."""
    return Scales.of([1, 2, 3, 4, 6, 9, 13, 18, 24, 32])


@SCALE_SCHEDULES.register("explicit")
def explicit(sizes: Sequence[int | Sequence[int]]) -> Scales:
    """Any list of sizes: square ints or ``[h, w]`` pairs for non-square images."""
    return Scales.of(list(sizes))


def _check_span(num_scales: int, first: int, last: int) -> None:
    if num_scales < 1:
        raise InvalidScalesError(f"num_scales must be >= 1, got {num_scales}")
    if first < 1 or last < first:
        raise InvalidScalesError(f"need 1 <= first <= latent_size, got first={first}, latent_size={last}")
    if num_scales > last - first + 1:
        raise InvalidScalesError(
            f"cannot fit {num_scales} strictly growing scales between {first} and {last}; "
            f"use at most {last - first + 1}"
        )


def _strictly_increasing(raw: Sequence[float], first: int, last: int) -> list[int]:
    """Round a real-valued ramp to ints, pushing collisions up while keeping room for the remaining scales."""
    n = len(raw)
    out: list[int] = []
    for i, v in enumerate(raw):
        lo = out[-1] + 1 if out else first
        hi = last - (n - 1 - i)
        out.append(min(max(round(v), lo), hi))
    out[-1] = last
    return out


@SCALE_SCHEDULES.register("linear")
def linear(num_scales: int, latent_size: int, first: int = 1) -> Scales:
    """``num_scales`` sizes evenly spaced from ``first`` to ``latent_size``."""
    _check_span(num_scales, first, latent_size)
    if num_scales == 1:
        return Scales.of([latent_size])
    step = (latent_size - first) / (num_scales - 1)
    return Scales.of(_strictly_increasing([first + i * step for i in range(num_scales)], first, latent_size))


@SCALE_SCHEDULES.register("geometric")
def geometric(num_scales: int, latent_size: int, first: int = 1) -> Scales:
    """``num_scales`` sizes growing by a constant ratio from ``first`` to ``latent_size``."""
    _check_span(num_scales, first, latent_size)
    if num_scales == 1:
        return Scales.of([latent_size])
    ratio = math.exp(math.log(latent_size / first) / (num_scales - 1))
    return Scales.of(_strictly_increasing([first * ratio**i for i in range(num_scales)], first, latent_size))
