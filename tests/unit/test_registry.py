import pytest

from varkit import QUANTIZERS, REGISTRIES, SCALE_SCHEDULES
from varkit.registry import DuplicateComponentError, Registry, UnknownComponentError


def make() -> Registry[int]:
    reg: Registry[int] = Registry("widget")

    @reg.register("alpha")
    def alpha(value: int = 1) -> int:
        """Alpha widget."""
        return value

    reg.register("alphabet", lambda: 26)
    return reg


def test_decorator_and_call_forms_build() -> None:
    reg = make()
    assert reg.build("alpha") == 1
    assert reg.build({"name": "alpha", "value": 5}) == 5
    assert reg.build({"name": "alpha"}, value=7) == 7
    assert reg.build("alphabet") == 26
    assert reg.names() == ["alpha", "alphabet"] and "alpha" in reg and len(reg) == 2
    assert reg.entry("alpha").origin == __name__.split(".")[0] and reg.entry("alpha").summary == "Alpha widget."


def test_duplicate_name_names_both_origins() -> None:
    reg = make()

    def other() -> int:
        return 2

    other.__module__ = "someplugin.widgets"
    with pytest.raises(DuplicateComponentError) as err:
        reg.register("alpha", other)
    text = str(err.value)
    assert "'alpha'" in text and __name__ in text and "someplugin.widgets" in text
    assert reg.build("alpha") == 1  # the first registration is untouched


def test_unknown_name_lists_close_matches_and_all_names() -> None:
    reg = make()
    with pytest.raises(UnknownComponentError) as err:
        reg.get("alpah")
    text = str(err.value)
    assert "unknown widget 'alpah'" in text
    assert "Did you mean 'alpha'" in text
    assert "Known widgets: alpha, alphabet." in text
    with pytest.raises(UnknownComponentError, match="Known widgets: alpha, alphabet") as err2:
        reg.get("zzz")
    assert "Did you mean" not in str(err2.value)


def test_bad_arguments_are_named_with_accepted_ones() -> None:
    reg = make()
    with pytest.raises(TypeError, match=r"widget 'alpha' does not take colour; it accepts: value"):
        reg.build({"name": "alpha", "colour": "red"})
    with pytest.raises(ValueError, match="needs a 'name' key"):
        reg.build({"value": 3})


def test_builtin_registries_exist_with_builtins() -> None:
    assert set(REGISTRIES) == {
        "quantizer",
        "schedule",
        "attention",
        "cfg_schedule",
        "evaluator",
        "speedup",
        "objective",
    }
    assert REGISTRIES["speedup"].entry("token_pruning").origin == "built-in"
    assert {"var_256", "var_512", "explicit", "linear", "geometric"} <= set(SCALE_SCHEDULES.names())
    assert SCALE_SCHEDULES.entry("var_256").origin == "built-in"
    with pytest.raises(UnknownComponentError, match="Known quantizers"):
        QUANTIZERS.get("no-such-quantizer")
