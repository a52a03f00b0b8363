"""Core's V3 dynamic inputs: expansion against live inputs (ComfyUI's
``get_finalized_class_inputs``), regrouping of values (``build_nested_inputs``) and the
declaration checks."""

from __future__ import annotations

import pytest

import loom
from loom.errors import NodeDefinitionError
from loom.nodes.dynamic import (
    Autogrow,
    DynamicCombo,
    DynamicOption,
    Slot,
    finalize_inputs,
    has_dynamic,
    nest_values,
)

ui = loom.ui

GROW = Autogrow(Slot.socket("image", "IMAGE"), prefix="image", min=2, max=4)
COMBO = DynamicCombo(
    [
        DynamicOption("by", [Slot.widget("factor", ui.float(1.0, min=0.0))]),
        DynamicOption(
            "many",
            [Slot.socket("extra", "MASK", optional=True)],
        ),
    ]
)
INPUTS = {
    "required": {
        "images": GROW.spec({}),
        "mode": COMBO.spec({"tooltip": "t"}),
        "plain": ["INT", {"default": 1}],
    }
}


def test_only_given_slots_expand_required_below_min():
    # ComfyUI 0.8: image1 (below min, not given) is not expanded, so never reported missing
    live = {"images.image0": ["1", 0], "images.image2": ["2", 0], "mode": "by", "plain": 3}
    finalized = finalize_inputs(INPUTS, live)
    assert list(finalized.required) == ["images.image0", "mode", "mode.factor", "plain"]
    assert list(finalized.optional) == ["images.image2"]
    assert finalized.required["mode"] == [["by", "many"], {"tooltip": "t"}]
    values = {"images.image0": "a", "images.image2": "c", "mode": "by", "mode.factor": 2.0}
    assert nest_values({**values, "plain": 3}, finalized) == {
        "plain": 3,
        "images": {"image0": "a", "image2": "c"},
        "mode": {"mode": "by", "factor": 2.0},
    }


def test_unknown_option_keeps_only_the_combo_and_no_slot_gives_an_empty_dict():
    finalized = finalize_inputs(INPUTS, {"mode": "nope"})
    assert "mode.factor" not in finalized.required and "mode" in finalized.required
    assert finalized.empty == ("images",)
    assert nest_values({"mode": "nope"}, finalized)["images"] == {}


def test_combo_not_given_is_not_expanded():
    # ComfyUI 0.8 adds a DynamicCombo's own entry only when its key is given
    finalized = finalize_inputs(INPUTS, {"plain": 3})
    assert list(finalized.required) == ["plain"] and finalized.optional == {}
    assert nest_values({"plain": 3}, finalized) == {"plain": 3, "images": {}}


def test_nested_dynamic_inputs_use_dotted_paths():
    inner = Autogrow(Slot.socket("m", "MASK"), names=["a", "b"], min=0)
    outer = DynamicCombo([DynamicOption("x", []), DynamicOption("y", [])])
    spec = outer.spec({})
    spec[1]["options"][1]["inputs"]["required"]["masks"] = inner.spec({})
    finalized = finalize_inputs({"required": {"pick": spec}}, {"pick": "y", "pick.masks.b": 1})
    assert finalized.optional == {"pick.masks.b": ["MASK", {}]}
    assert nest_values({"pick": "y", "pick.masks.b": 1}, finalized) == {
        "pick": {"pick": "y", "masks": {"b": 1}}
    }
    finalized = finalize_inputs({"required": {"pick": spec}}, {"pick": "y"})
    assert nest_values({"pick": "y"}, finalized) == {"pick": {"pick": "y", "masks": {}}}


def test_widget_templates_are_forced_to_sockets_and_declarations_are_checked():
    grow = Autogrow(Slot.widget("w", ui.float(1.0)), names=["w0"], min=0)
    assert grow.spec({})[1]["template"] == {
        "input": {"required": {"w": ["FLOAT", {"default": 1.0, "forceInput": True}]}},
        "names": ["w0"],
        "min": 0,
    }
    with pytest.raises(NodeDefinitionError, match="exactly one of prefix= or names="):
        Autogrow(Slot.socket("i", "IMAGE"))
    with pytest.raises(NodeDefinitionError, match="max <= 100"):
        Autogrow(Slot.socket("i", "IMAGE"), prefix="i", max=101)
    with pytest.raises(NodeDefinitionError, match=r"Slot\.widget takes"):
        Slot.widget("x", ui.input())
    assert has_dynamic(INPUTS) and not has_dynamic({"required": {"c": [["a"], {}]}})
