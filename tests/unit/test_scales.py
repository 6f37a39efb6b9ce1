import pytest
import torch

from varkit import SCALE_SCHEDULES, BlockCausalMask, Scales
from varkit.contracts import InvalidScalesError
from varkit.scales import geometric, linear


def test_var_256_matches_the_paper() -> None:
    s = SCALE_SCHEDULES.build("var_256")
    assert [h for h, _ in s.sizes] == [1, 2, 3, 4, 5, 6, 8, 10, 13, 16]
    assert s.total_tokens == 680 and s.first_tokens == 1 and s.last == (16, 16)
    assert s.offsets[-1] == 680 and s.slice(9) == slice(424, 680)
    assert s.level_ids().tolist()[:6] == [0, 1, 1, 1, 1, 2]
    assert SCALE_SCHEDULES.build("var_512").last == (32, 32)


def test_non_square_pairs() -> None:
    s = Scales.of([(1, 2), (2, 3), [4, 6]])
    assert s.token_counts == (2, 6, 24) and s.as_list() == [[1, 2], [2, 3], [4, 6]]
    assert not s.is_square() and s.describe() == "(1x2, 2x3, 4x6)"


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ([], "at least one scale"),
        ([1, 3, 2], "grow strictly"),
        ([1, 2, 2], "grow strictly"),
        ([0, 2], "positive int"),
        ([1.5, 2], "positive int"),
        (["a"], "positive int"),
        ([(2, 1), (1, 2)], "grow strictly"),
    ],
)
def test_invalid_schedules_are_refused(sizes: list, message: str) -> None:
    with pytest.raises(InvalidScalesError, match=message):
        Scales.of(sizes)


def test_latent_size_check() -> None:
    s = Scales.of([1, 2, 4])
    assert s.validate_for_latent(4) is s
    with pytest.raises(InvalidScalesError, match=r"last scale 4x4 .* latent size 8x8"):
        s.validate_for_latent((8, 8))


@pytest.mark.parametrize("factory", [linear, geometric])
@pytest.mark.parametrize(("num", "latent"), [(1, 5), (4, 4), (6, 8), (10, 16), (10, 32)])
def test_generated_schedules_hit_the_latent_size(factory, num: int, latent: int) -> None:
    s = factory(num, latent)
    assert s.num_scales == num and s.last == (latent, latent) and s.sizes[0][0] == (1 if num > 1 else latent)


def test_generated_schedule_that_cannot_fit_is_refused() -> None:
    with pytest.raises(InvalidScalesError, match="cannot fit 6 strictly growing scales"):
        linear(6, 4)


def test_block_causal_mask_structure() -> None:
    s = Scales.of([1, 2, 3])
    dense = BlockCausalMask(s).dense()
    assert dense.shape == (14, 14)
    levels = s.level_ids()
    expected = levels[:, None] >= levels[None, :]
    assert torch.equal(dense, expected)
    assert dense[0].sum() == 1 and dense[-1].all() and not dense[1, 5]
    additive = BlockCausalMask(s).additive()
    assert additive.shape == (1, 1, 14, 14) and torch.isinf(additive[0, 0, 0, 1]) and additive[0, 0, 4, 0] == 0
