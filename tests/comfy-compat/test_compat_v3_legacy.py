"""A V3 node read the V1 way: a pack mixing V1 and V3 nodes in ``NODE_CLASS_MAPPINGS`` whose
V1 node is built from the V3 node's ``INPUT_TYPES()`` / ``RETURN_TYPES`` / ``CATEGORY`` at
import and calls it through ``FUNCTION``; ``GET_NODE_INFO_V1/V3`` and ``io.NodeInfoV1``;
``Schema.validate`` and an input class with its own ``validate``."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from compat_helpers import empty_image

from loom.nodes.object_info import object_info

PACK = """
import dataclasses

from comfy_api.latest import io


class Blend(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LegacyBlend",
            display_name="Blend (V3)",
            category="legacy/test",
            description="Scales an image.",
            inputs=[
                io.Image.Input("image"),
                io.Float.Input("factor", default=0.5, min=0.0, max=1.0, tooltip="How much."),
                io.Mask.Input("mask", optional=True),
            ],
            outputs=[
                io.Image.Output(display_name="scaled", tooltip="The scaled image."),
                io.Int.Output(is_output_list=True),
            ],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, image, factor, mask=None):
        return io.NodeOutput(image * factor, [1, 2])


class BlendTwice:
    \"\"\"A V1 node built from the V3 node's V1 view, as wrapper packs do.\"\"\"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": dict(Blend.INPUT_TYPES()["required"])}

    RETURN_TYPES = (Blend.RETURN_TYPES[0],)
    RETURN_NAMES = (Blend.RETURN_NAMES[0],)
    CATEGORY = Blend.CATEGORY
    FUNCTION = "run"

    def run(self, image, factor):
        call = getattr(Blend, Blend.FUNCTION)
        once = call(image=image, factor=factor).result[0]
        return (call(image=once, factor=factor)[0],)


VIEW = {
    "FUNCTION": Blend.FUNCTION,
    "OUTPUT_IS_LIST": Blend.OUTPUT_IS_LIST,
    "OUTPUT_TOOLTIPS": Blend.OUTPUT_TOOLTIPS,
    "OUTPUT_NODE": Blend.OUTPUT_NODE,
    "EXPERIMENTAL": Blend.EXPERIMENTAL,
    "DEPRECATED": Blend.DEPRECATED,
    "INPUT_IS_LIST": Blend.INPUT_IS_LIST,
    "DESCRIPTION": Blend.DESCRIPTION,
}

# A record built by hand, as a pack listing its nodes for a tool does.
MANUAL = dataclasses.asdict(io.NodeInfoV1(name="LegacyBlend", category=Blend.CATEGORY))

NODE_CLASS_MAPPINGS = {"LegacyBlend": Blend, "LegacyBlendTwice": BlendTwice}
"""


@pytest.fixture
def runtime(write_pack, make_runtime):
    write_pack("legacy_pack", {"__init__.py": PACK})
    return make_runtime()


def _pack():
    return __import__("custom_nodes.legacy_pack", fromlist=["Blend"])


def test_v3_node_in_node_class_mappings_registers_as_v3(runtime):
    definition = runtime.registry.nodes["LegacyBlend"]
    assert definition.v3 and definition.source_class is _pack().Blend
    assert not runtime.registry.failures


def test_v1_view_is_read_from_the_schema(runtime):
    pack = _pack()
    assert pack.Blend.INPUT_TYPES() == {
        "required": {
            "image": ("IMAGE", {}),
            "factor": ("FLOAT", {"tooltip": "How much.", "default": 0.5, "min": 0.0, "max": 1.0}),
        },
        "optional": {"mask": ("MASK", {})},
    }
    assert (pack.Blend.RETURN_TYPES, pack.Blend.RETURN_NAMES) == (
        ["IMAGE", "INT"],
        ["scaled", "INT"],
    )
    assert pack.VIEW == {
        "FUNCTION": "EXECUTE_NORMALIZED",
        "OUTPUT_IS_LIST": [False, True],
        "OUTPUT_TOOLTIPS": ["The scaled image.", None],
        "OUTPUT_NODE": False,
        "EXPERIMENTAL": True,
        "DEPRECATED": False,
        "INPUT_IS_LIST": False,
        "DESCRIPTION": "Scales an image.",
    }
    assert pack.Blend.CATEGORY == "legacy/test"
    assert pack.Blend.SCHEMA.node_id == "LegacyBlend"  # GET_SCHEMA leaves it on the class


def test_v1_node_built_from_the_v3_view_is_served_and_runs(runtime):
    info = object_info(runtime.registry)["LegacyBlendTwice"]
    assert info["input"]["required"]["factor"] == [
        "FLOAT",
        {"tooltip": "How much.", "default": 0.5, "min": 0.0, "max": 1.0},
    ]
    assert (info["output"], info["output_name"], info["category"]) == (
        ["IMAGE"],
        ["scaled"],
        "legacy/test",
    )
    prompt = {
        "1": empty_image(),
        "2": {"class_type": "LegacyBlendTwice", "inputs": {"image": ["1", 0], "factor": 0.5}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    result = runtime.executor.run_prompt(prompt)
    assert result.error is None, result.error
    ((image,),) = result.values["2"]
    torch.testing.assert_close(image, torch.full_like(image, 0.25))


def test_node_info_v1_is_what_object_info_serves(runtime):
    served = object_info(runtime.registry)["LegacyBlend"]
    info = _pack().Blend.GET_NODE_INFO_V1()
    assert info["python_module"] == "custom_nodes.legacy_pack"
    assert info["output_matchtypes"] is None  # no MatchType output
    for key, value in info.items():
        if value is not None:
            assert json.loads(json.dumps(value)) == served[key], key
    assert info["input_order"] == {"required": ["image", "factor"], "optional": ["mask"]}


def test_node_info_v3_lists_inputs_and_outputs_by_id(runtime):
    info = _pack().Blend.GET_NODE_INFO_V3()
    assert info["input"]["mask"] == ("MASK", {"optional": True})
    assert info["output"] == {
        "_0_IMAGE_": ("IMAGE", {"display_name": "scaled", "tooltip": "The scaled image.",
                                "is_output_list": False}),
        "_1_INT_": ("INT", {"is_output_list": True}),
    }  # fmt: skip
    assert (info["name"], info["hidden"], info["experimental"]) == ("LegacyBlend", [], True)


def test_node_info_records_are_dataclasses(runtime):
    from comfy_api.latest import io

    manual = _pack().MANUAL
    assert manual["name"] == "LegacyBlend" and manual["category"] == "legacy/test"
    assert set(manual) == {f.name for f in dataclasses.fields(io.NodeInfoV1)}
    assert "input_order" in manual and "output_matchtypes" in manual


def test_schema_validate_raises_value_error_listing_every_duplicate():
    from comfy_api.latest import io

    schema = io.Schema(
        node_id="Dup",
        inputs=[io.Int.Input("a"), io.Int.Input("a"), io.Int.Input("b")],
        outputs=[io.Int.Output(id="o"), io.Int.Output(id="o")],
    )
    schema.finalize()
    with pytest.raises(ValueError) as info:
        schema.validate()
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and "'a'" in lines[0] and "'o'" in lines[1]
    shared = io.Schema(node_id="Ok", inputs=[io.Int.Input("x")], outputs=[io.Int.Output(id="x")])
    shared.finalize()
    shared.validate()  # an input and an output may share an id


CUSTOM_INPUT_PACK = """
from comfy_api.latest import ComfyExtension, io


class Count(io.Int.Input):
    def validate(self):
        if self.default is not None and self.default < 0:
            raise ValueError(f"{self.id}: default must not be negative")


class Good(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="CountGood", inputs=[Count("n", default=2)],
                         outputs=[io.Int.Output()])

    @classmethod
    def execute(cls, n):
        return io.NodeOutput(n)


class Bad(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="CountBad", inputs=[Count("n", default=-1)])

    @classmethod
    def execute(cls, n):
        return io.NodeOutput()


class Ext(ComfyExtension):
    async def get_node_list(self):
        return [Good, Bad]


async def comfy_entrypoint():
    return Ext()
"""


def test_an_inputs_own_validate_runs_at_registration(write_pack, make_runtime):
    write_pack("count_pack", {"__init__.py": CUSTOM_INPUT_PACK})
    registry = make_runtime().registry
    assert "CountGood" in registry.nodes and "CountBad" not in registry.nodes
    (failure,) = [str(f) for f in registry.failures if "CountBad" in str(f) or "Bad" in str(f)]
    assert "n: default must not be negative" in failure and "Bad" in failure
    with pytest.raises(ValueError, match="must not be negative"):
        __import__("custom_nodes.count_pack", fromlist=["Bad"]).Bad.GET_SCHEMA()


def test_async_node_is_called_the_v1_way_and_a_clone_carries_hidden_values():
    import asyncio

    from comfy_api.latest import io

    class Echo(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(
                node_id="Echo", inputs=[io.Int.Input("n")], outputs=[io.Int.Output()],
                hidden=[io.Hidden.unique_id],
            )  # fmt: skip

        @classmethod
        async def execute(cls, n):
            return (n + 1,)  # a bare tuple, normalised to a NodeOutput

    assert Echo.FUNCTION == "EXECUTE_NORMALIZED_ASYNC"
    assert asyncio.run(getattr(Echo, Echo.FUNCTION)(n=1)).result == (2,)
    clone = Echo.PREPARE_CLASS_CLONE({"hidden_inputs": {io.Hidden.unique_id: "7"}})
    assert issubclass(clone, Echo) and clone.hidden.unique_id == "7"
    assert Echo.hidden.unique_id is None  # the node class itself is untouched
    assert Echo.INPUT_TYPES()["hidden"] == {"unique_id": ("UNIQUE_ID",)}
