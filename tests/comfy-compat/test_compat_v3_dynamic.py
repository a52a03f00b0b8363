"""A V3 pack using ``io.Autogrow`` and ``io.DynamicCombo``, loaded from ``custom_nodes/``:
served as ComfyUI serves it, run with 1, 2 and 3 grown slots, and validated slot by slot."""

from __future__ import annotations

import pytest
import torch
from compat_helpers import empty_image

from loom.errors import PromptValidationError
from loom.nodes.object_info import object_info

PACK = """
import torch
from comfy_api.latest import ComfyExtension, io

SEEN = []


class Stack(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        template = io.Autogrow.TemplatePrefix(io.Image.Input("image"), prefix="image", min=1, max=4)
        return io.Schema(
            node_id="V3Stack",
            category="v3test",
            inputs=[io.Autogrow.Input("images", template=template)],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, images):
        SEEN.append(sorted(images))
        return io.NodeOutput(torch.cat(list(images.values())))


class Adjust(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="V3Adjust",
            category="v3test",
            inputs=[
                io.Image.Input("image"),
                io.DynamicCombo.Input("how", options=[
                    io.DynamicCombo.Option("add", [io.Float.Input("amount", default=0.25, min=0.0, max=1.0)]),
                    io.DynamicCombo.Option("invert", []),
                ]),
                io.Autogrow.Input("extra", template=io.Autogrow.TemplateNames(
                    io.Float.Input("weight", default=1.0), names=["w_a", "w_b"], min=0)),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def validate_inputs(cls, extra):
        if extra.get("w_a") == 0.75:
            return "0.75 is not allowed"
        return True

    @classmethod
    def fingerprint_inputs(cls, how):
        SEEN.append(("fingerprint", how))
        return how["how"]

    @classmethod
    def execute(cls, image, how, extra):
        SEEN.append((how, extra))
        if how["how"] == "add":
            image = image + how["amount"]
        else:
            image = 1.0 - image
        return io.NodeOutput(image * sum(extra.values(), 1.0))


class First(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        template = io.Autogrow.TemplatePrefix(
            io.Image.Input("value", lazy=True), prefix="value", min=1, max=3
        )
        return io.Schema(
            node_id="V3First",
            inputs=[io.Autogrow.Input("values", template=template)],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def check_lazy_status(cls, values):
        return ["values.value0"] if values.get("value0") is None else []

    @classmethod
    def execute(cls, values):
        SEEN.append(("first", sorted(k for k, v in values.items() if v is not None)))
        return io.NodeOutput(values["value0"])


class Extension(ComfyExtension):
    async def get_node_list(self):
        return [Stack, Adjust, First]


async def comfy_entrypoint():
    return Extension()
"""


@pytest.fixture
def runtime(write_pack, make_runtime):
    write_pack("dynamic_pack", {"__init__.py": PACK})
    return make_runtime()


def _seen() -> list:
    return __import__("custom_nodes.dynamic_pack", fromlist=["SEEN"]).SEEN


def test_dynamic_inputs_are_served_as_comfyui_serves_them(runtime):
    info = object_info(runtime.registry)
    assert info["V3Stack"]["input"]["required"] == {
        "images": [
            "COMFY_AUTOGROW_V3",
            {
                "template": {
                    "input": {"required": {"image": ["IMAGE", {}]}},
                    "prefix": "image",
                    "min": 1,
                    "max": 4,
                }
            },
        ]
    }
    amount = ["FLOAT", {"default": 0.25, "min": 0.0, "max": 1.0}]
    weight = ["FLOAT", {"default": 1.0, "forceInput": True}]
    assert info["V3Adjust"]["input"]["required"]["how"] == [
        "COMFY_DYNAMICCOMBO_V3",
        {
            "options": [
                {"key": "add", "inputs": {"required": {"amount": amount}}},
                {"key": "invert", "inputs": {"required": {}}},
            ]
        },
    ]
    assert info["V3Adjust"]["input"]["required"]["extra"] == [
        "COMFY_AUTOGROW_V3",
        {
            "template": {
                "input": {"required": {"weight": weight}},
                "names": ["w_a", "w_b"],
                "min": 0,
            }
        },
    ]


@pytest.mark.parametrize("slots", [1, 2, 3])
def test_autogrow_pack_runs_with_grown_slots(runtime, slots):
    prompt = {str(i + 1): empty_image() for i in range(slots)}
    prompt["9"] = {
        "class_type": "V3Stack",
        "inputs": {f"images.image{i}": [str(i + 1), 0] for i in range(slots)},
    }
    prompt["10"] = {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}}
    result = runtime.executor.run_prompt(prompt)
    assert result.error is None, result.error
    ((stacked,),) = result.values["9"]
    assert stacked.shape[0] == slots
    assert _seen()[-1] == [f"image{i}" for i in range(slots)]


def test_dynamic_combo_hands_the_chosen_option_and_its_inputs(runtime):
    def adjust(**inputs):
        return {
            "1": empty_image(),
            "2": {"class_type": "PrimitiveFloat", "inputs": {"value": 0.5}},
            "9": {"class_type": "V3Adjust", "inputs": {"image": ["1", 0], **inputs}},
            "10": {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}},
        }

    result = runtime.executor.run_prompt(
        adjust(**{"how": "add", "how.amount": 0.25, "extra.w_b": ["2", 0]})
    )
    assert result.error is None, result.error
    assert _seen()[-1] == ({"how": "add", "amount": 0.25}, {"w_b": 0.5})
    ((image,),) = result.values["9"]
    base = result.values["1"][0][0]
    torch.testing.assert_close(image, (base + 0.25) * 1.5)

    result = runtime.executor.run_prompt(adjust(how="invert"))
    assert result.error is None, result.error
    assert _seen()[-1] == ({"how": "invert"}, {})  # an Autogrow given no slot: {}

    with pytest.raises(PromptValidationError) as info:
        runtime.executor.validate(adjust(how="blur"))
    (error,) = info.value.node_errors["9"]["errors"]
    assert (error["type"], error["extra_info"]["input_name"]) == ("value_not_in_list", "how")
    assert error["details"] == "how: 'blur' not in ['add', 'invert']"

    # validate_inputs and fingerprint_inputs see the option grouped, as execute does
    assert ("fingerprint", {"how": "invert"}) in _seen()
    with pytest.raises(PromptValidationError) as info:
        runtime.executor.validate(adjust(**{"how": "invert", "extra.w_a": 0.75}))
    (error,) = info.value.node_errors["9"]["errors"]
    assert error["type"] == "custom_validation_failed"
    assert error["details"].endswith("0.75 is not allowed")

    with pytest.raises(PromptValidationError) as info:
        runtime.executor.validate(adjust(**{"how": "add", "how.amount": 2.0}))
    (error,) = info.value.node_errors["9"]["errors"]
    assert (error["type"], error["details"]) == ("value_bigger_than_max", "how.amount")


def test_grown_slot_below_min_is_not_required(runtime):
    # ComfyUI 0.8 expands only the slots given, so none is reported missing; the pack's
    # execute gets {} (as 0.10 hands it) and fails on it, an execution error
    prompt = {
        "9": {"class_type": "V3Stack", "inputs": {}},
        "10": {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}},
    }
    runtime.executor.validate(prompt)
    result = runtime.executor.run_prompt(prompt)
    assert result.error is not None and result.error["node_id"] == "9"
    assert _seen()[-1] == []


def test_lazy_grown_slots_run_only_when_asked_for(runtime):
    prompt = {
        "1": empty_image(),
        "2": empty_image(color=0),
        "9": {
            "class_type": "V3First",
            "inputs": {"values.value0": ["1", 0], "values.value1": ["2", 0]},
        },
        "10": {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}},
    }
    result = runtime.executor.run_prompt(prompt)
    assert result.error is None, result.error
    assert "1" in result.values and "2" not in result.values  # value1's upstream never ran
    assert _seen()[-1] == ("first", ["value0"])
