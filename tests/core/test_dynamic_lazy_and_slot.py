"""Declarative dynamic inputs that are lazy (``ui.autogrow(..., lazy=True)`` and friends)
and the DynamicSlot kind (``ui.dynamic_slot``): what ``/object_info`` serves, validation
under dotted names, the grouped value a node receives, and which upstream nodes run."""

from __future__ import annotations

from typing import Any

import pytest

import loom
from loom.errors import PromptValidationError
from loom.executor.executor import Executor
from loom.nodes.dynamic import (
    Autogrow,
    DynamicCombo,
    DynamicOption,
    DynamicSlot,
    Slot,
    finalize_inputs,
    nest_values,
)
from loom.nodes.object_info import object_info
from loom.types import AnyValue
from loom.workflow.convert import convert_workflow

ui = loom.ui
RAN: list[str] = []
SEEN: list[Any] = []


@loom.node("CountedInt", category="test")
class CountedInt:
    """An INT source that records each run."""

    value: int = ui.int(0, min=-100, max=100)

    def run(self, ctx) -> int:
        RAN.append(f"CountedInt:{self.value}")
        return self.value


@loom.node("ShowValue", category="test", output_node=True)
class ShowValue:
    """Records what it received."""

    value: AnyValue

    def run(self, ctx) -> None:
        SEEN.append(self.value)


@loom.node("TextOf", category="test")
class TextOf:
    """A STRING source."""

    text: str = ui.string("")

    def run(self, ctx) -> str:
        return self.text


@loom.node("PickGrown", category="test")
class PickGrown:
    """Returns one grown slot; only that slot's upstream is evaluated."""

    values: dict[str, int] = ui.autogrow(
        Autogrow(Slot.socket("value", "INT"), prefix="value", min=1, max=4), lazy=True
    )
    index: int = ui.int(0, min=0, max=3)

    def check_lazy_status(self) -> list[str]:
        name = f"value{self.index}"
        return [f"values.{name}"] if self.values.get(name, 0) is None else []

    def run(self, ctx) -> int:
        return self.values[f"value{self.index}"]


@loom.node("SumGrownByDefault", category="test")
class SumGrownByDefault:
    """Lazy grown slots with no check_lazy_status: every given slot is asked for."""

    values: dict[str, int] = ui.autogrow(
        Autogrow(Slot.socket("value", "INT"), prefix="value", min=1, max=4), lazy=True
    )

    def run(self, ctx) -> int:
        return sum(self.values.values())


@loom.node("ChooseSource", category="test")
class ChooseSource:
    """A DynamicCombo whose option inputs are lazy: "fixed" never evaluates the socket."""

    mode: dict[str, Any] = ui.dynamic_combo(
        DynamicCombo(
            [
                DynamicOption(
                    "fixed", [Slot.widget("amount", ui.int(7)), Slot.socket("src", "INT")]
                ),
                DynamicOption("linked", [Slot.socket("src", "INT")]),
            ]
        ),
        lazy=True,
    )

    def check_lazy_status(self) -> list[str]:
        wanted = "amount" if self.mode["mode"] == "fixed" else "src"
        return [f"mode.{wanted}"] if self.mode.get(wanted, 0) is None else []

    def run(self, ctx) -> int:
        return self.mode["amount"] if self.mode["mode"] == "fixed" else self.mode["src"]


@loom.node("Guided", category="test")
class Guided:
    """A DynamicSlot: a guide INT socket that brings a strength widget once connected."""

    base: int = ui.int(1, min=0, max=100)
    guide: dict[str, Any] | None = ui.dynamic_slot(
        DynamicSlot("INT", [Slot.widget("strength", ui.int(2, min=0, max=10))]),
        tooltip="An optional guide.",
    )

    def run(self, ctx) -> int:
        SEEN.append(self.guide)
        if self.guide is None:
            return self.base
        return self.base + self.guide["guide"] * self.guide["strength"]


@loom.node("LazyGuided", category="test")
class LazyGuided:
    """A lazy DynamicSlot, used only when its ``use`` switch says so."""

    use: bool = ui.boolean(False)
    guide: dict[str, Any] | None = ui.dynamic_slot(DynamicSlot("INT"), lazy=True)

    def check_lazy_status(self) -> list[str]:
        return ["guide"] if self.use and self.guide and self.guide["guide"] is None else []

    def run(self, ctx) -> int:
        return self.guide["guide"] if self.use and self.guide else -1


@loom.node("GuidedV3", category="test", v3=True)
class GuidedV3:
    """A DynamicSlot on a node ComfyUI declares with the V3 schema."""

    guide: dict[str, Any] | None = ui.dynamic_slot(
        DynamicSlot("IMAGE", [Slot.widget("mode", ui.combo(["a", "b"], default="a"))])
    )

    def run(self, ctx) -> int:
        return 0


class Nodes:
    @loom.hookimpl
    def register_nodes(self, register):
        for cls in (
            CountedInt,
            ShowValue,
            TextOf,
            PickGrown,
            SumGrownByDefault,
            ChooseSource,
            Guided,
            GuidedV3,
            LazyGuided,
        ):
            register(cls)


@pytest.fixture
def executor(loom_registry):
    RAN.clear()
    SEEN.clear()
    return Executor(registry=loom_registry(builtins=False, nodes=Nodes()))


def _const(value: int) -> dict:
    return {"class_type": "CountedInt", "inputs": {"value": value}}


def _show(source: str) -> dict:
    return {"class_type": "ShowValue", "inputs": {"value": [source, 0]}}


def _run(executor: Executor, prompt: dict) -> Any:
    result = executor.run_prompt(prompt, prompt_id="p")
    assert result.status_str == "success", result.messages
    return result


@pytest.mark.parametrize("index", [0, 1, 2])
def test_only_the_requested_lazy_grown_slot_runs(executor, index):
    prompt = {str(i + 1): _const(10 * (i + 1)) for i in range(3)}
    prompt["10"] = {
        "class_type": "PickGrown",
        "inputs": {**{f"values.value{i}": [str(i + 1), 0] for i in range(3)}, "index": index},
    }
    prompt["11"] = _show("10")
    _run(executor, prompt)
    assert SEEN == [10 * (index + 1)]
    assert RAN == [f"CountedInt:{10 * (index + 1)}"]  # the other slots' sources never ran


def test_lazy_grown_slots_without_check_lazy_status_are_all_asked_for(executor):
    prompt = {"1": _const(1), "2": _const(2)}
    prompt["10"] = {
        "class_type": "SumGrownByDefault",
        "inputs": {"values.value0": ["1", 0], "values.value1": ["2", 0]},
    }
    prompt["11"] = _show("10")
    _run(executor, prompt)
    assert SEEN == [3] and sorted(RAN) == ["CountedInt:1", "CountedInt:2"]


def test_lazy_option_input_is_evaluated_only_for_the_option_that_uses_it(executor):
    fixed = {
        "1": _const(5),
        "10": {
            "class_type": "ChooseSource",
            "inputs": {"mode": "fixed", "mode.amount": 7, "mode.src": ["1", 0]},
        },
        "11": _show("10"),
    }
    _run(executor, fixed)
    assert SEEN == [7] and RAN == []  # "fixed" never asked for mode.src
    linked = {
        "1": _const(5),
        "10": {"class_type": "ChooseSource", "inputs": {"mode": "linked", "mode.src": ["1", 0]}},
        "11": _show("10"),
    }
    SEEN.clear()
    _run(executor, linked)
    assert SEEN == [5] and RAN == ["CountedInt:5"]


def test_lazy_marks_the_nested_specs_object_info_serves(executor):
    grown = executor.registry.get_node("PickGrown").input_types(executor.registry)
    template = grown["required"]["values"][1]["template"]
    assert template["input"] == {"required": {"value": ["INT", {"lazy": True, "forceInput": True}]}}
    combo = executor.registry.get_node("ChooseSource").input_types(executor.registry)
    fixed = combo["required"]["mode"][1]["options"][0]["inputs"]["required"]
    assert fixed == {
        "amount": ["INT", {"default": 7, "lazy": True}],
        "src": ["INT", {"lazy": True}],
    }


def test_dynamic_slot_object_info_is_comfyuis_form(executor):
    inputs = executor.registry.get_node("Guided").input_types(executor.registry)
    # ComfyUI's DynamicSlot is always optional; slotType names the socket's type, inputs
    # its nested inputs, and an INT slot is forced to be a socket.
    assert inputs["optional"]["guide"] == [
        "COMFY_DYNAMICSLOT_V3",
        {
            "tooltip": "An optional guide.",
            "slotType": "INT",
            "inputs": {"required": {"strength": ["INT", {"default": 2, "min": 0, "max": 10}]}},
            "forceInput": True,
        },
    ]
    assert "guide" not in inputs["required"]


def test_dynamic_slot_inputs_render_in_v3_form_on_a_v3_node(executor):
    info = object_info(executor.registry)["GuidedV3"]
    assert info["input"]["optional"]["guide"] == [
        "COMFY_DYNAMICSLOT_V3",
        {
            "slotType": "IMAGE",
            "inputs": {
                "required": {
                    "mode": ["COMBO", {"default": "a", "multiselect": False, "options": ["a", "b"]}]
                }
            },
        },
    ]


def test_dynamic_slot_connected_brings_its_inputs_grouped(executor):
    prompt = {
        "1": _const(3),
        "10": {
            "class_type": "Guided",
            "inputs": {"base": 1, "guide": ["1", 0], "guide.strength": 4},
        },
        "11": _show("10"),
    }
    _run(executor, prompt)
    assert SEEN == [{"guide": 3, "strength": 4}, 13]


def test_dynamic_slot_unconnected_gives_none_and_ignores_its_inputs(executor):
    # a stale inner value (out of range, even) is neither checked nor handed over
    prompt = {
        "10": {"class_type": "Guided", "inputs": {"base": 5, "guide.strength": 99}},
        "11": _show("10"),
    }
    _run(executor, prompt)
    assert SEEN == [None, 5]


def _errors(executor: Executor, prompt: dict) -> list[dict]:
    with pytest.raises(PromptValidationError) as info:
        executor.validate(prompt)
    return info.value.node_errors["10"]["errors"]


def test_dynamic_slot_inputs_are_validated_under_dotted_names(executor):
    base = {"1": _const(3), "11": _show("10")}
    missing = {**base, "10": {"class_type": "Guided", "inputs": {"base": 1, "guide": ["1", 0]}}}
    (error,) = _errors(executor, missing)
    assert (error["type"], error["extra_info"]["input_name"]) == (
        "required_input_missing",
        "guide.strength",
    )
    too_big = {
        **base,
        "10": {
            "class_type": "Guided",
            "inputs": {"base": 1, "guide": ["1", 0], "guide.strength": 11},
        },
    }
    (error,) = _errors(executor, too_big)
    assert (error["type"], error["details"]) == ("value_bigger_than_max", "guide.strength")
    wrong_type = {
        **base,
        "2": {"class_type": "TextOf", "inputs": {"text": "x"}},
        "10": {
            "class_type": "Guided",
            "inputs": {"base": 1, "guide": ["2", 0], "guide.strength": 1},
        },
    }
    (error,) = _errors(executor, wrong_type)
    assert (error["type"], error["extra_info"]["input_name"]) == ("return_type_mismatch", "guide")


def test_lazy_dynamic_slot_runs_its_source_only_when_asked(executor):
    prompt = {
        "1": _const(9),
        "10": {"class_type": "LazyGuided", "inputs": {"use": False, "guide": ["1", 0]}},
        "11": _show("10"),
    }
    _run(executor, prompt)
    assert SEEN == [-1] and RAN == []
    prompt["10"]["inputs"]["use"] = True
    SEEN.clear()
    _run(executor, prompt)
    assert SEEN == [9] and RAN == ["CountedInt:9"]


def test_finalize_and_nest_a_nested_dynamic_slot():
    slot = DynamicSlot("IMAGE", [Slot.socket("mask", "MASK", optional=True)])
    spec = {"required": {}, "optional": {"guide": slot.spec({})}}
    live = {"guide": ["1", 0], "guide.mask": ["2", 0]}
    finalized = finalize_inputs(spec, live)
    assert finalized.optional == {"guide": ["IMAGE", {}], "guide.mask": ["MASK", {}]}
    assert nest_values({"guide": "img", "guide.mask": "m"}, finalized) == {
        "guide": {"guide": "img", "mask": "m"}
    }
    assert finalize_inputs(spec, {"guide.mask": ["2", 0]}).optional == {}


def _ui_node(node_id, type_, inputs, widgets, outputs=()):
    return {
        "id": node_id,
        "type": type_,
        "pos": [0, 0],
        "size": [100, 100],
        "flags": {},
        "order": node_id,
        "mode": 0,
        "inputs": inputs,
        "outputs": list(outputs),
        "properties": {},
        "widgets_values": widgets,
    }


@pytest.mark.parametrize("connected", [True, False])
def test_ui_workflow_reads_a_dynamic_slots_widgets_only_while_connected(executor, connected):
    source_out = [{"name": "INT", "type": "INT", "links": [1] if connected else []}]
    guided_inputs = [
        {"name": "base", "type": "INT", "widget": {"name": "base"}, "link": None},
        {"name": "guide", "type": "COMFY_DYNAMICSLOT_V3", "link": 1 if connected else None},
    ]
    widgets = [6, 3] if connected else [6]
    if connected:
        guided_inputs.append(
            {
                "name": "guide.strength",
                "type": "INT",
                "widget": {"name": "guide.strength"},
                "link": None,
            }
        )
    workflow = {
        "last_node_id": 3,
        "last_link_id": 2,
        "nodes": [
            _ui_node(1, "CountedInt", [], [2], source_out),
            _ui_node(
                2, "Guided", guided_inputs, widgets, [{"name": "INT", "type": "INT", "links": [2]}]
            ),
            _ui_node(3, "ShowValue", [{"name": "value", "type": "*", "link": 2}], []),
        ],
        "links": ([[1, 1, 0, 2, 1, "INT"]] if connected else []) + [[2, 2, 0, 3, 0, "INT"]],
        "version": 0.4,
    }
    prompt = convert_workflow(workflow, executor.registry)
    expected = {"base": 6, "guide": ["1", 0], "guide.strength": 3} if connected else {"base": 6}
    assert prompt["2"]["inputs"] == expected
    _run(executor, {k: v for k, v in prompt.items() if k != "1" or connected})
    assert SEEN[-1] == (12 if connected else 6)
