"""A V3 pack using the parts of ``comfy_api.latest.io`` a pack reaches for beyond plain
sockets: ``io.DynamicSlot``, ``io.MatchType``, ``io.MultiType``, the wider socket types
(``io.SEGS``, ``io.Mesh``...), ``io.Combo.Input(remote=io.RemoteOptions(...))``, the
``IO`` alias, ``comfy_api.latest._io`` and ``ComfyAPI().execution.set_progress``; each
served as ComfyUI serves it and run."""

from __future__ import annotations

import io
import json

import pytest
import torch
from compat_helpers import empty_image

from loom.errors import PromptValidationError
from loom.nodes.object_info import object_info

PACK = """
from comfy_api.latest import ComfyAPI, ComfyAPISync, ComfyExtension, IO, io, ui
from comfy_api.latest._io import DynamicSlot

SEEN = []


class Guided(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="V3Guided",
            inputs=[
                io.Image.Input("image"),
                DynamicSlot.Input(
                    slot=io.Mask.Input("guide", lazy=True),
                    inputs=[io.Float.Input("strength", default=0.5, min=0.0, max=1.0)],
                    tooltip="Optional guide mask.",
                ),
                io.Boolean.Input("use_guide", default=True),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def check_lazy_status(cls, image, use_guide, guide=None):
        if use_guide and guide is not None and guide["guide"] is None:
            return ["guide"]
        return []

    @classmethod
    def execute(cls, image, use_guide, guide=None):
        SEEN.append(("guided", None if guide is None else sorted(guide), use_guide))
        if guide is None or not use_guide:
            return io.NodeOutput(image)
        mask = guide["guide"].reshape(1, *guide["guide"].shape[-2:], 1)
        return io.NodeOutput(image * (1.0 - guide["strength"] * mask))


class PassThrough(IO.ComfyNode):
    @classmethod
    def define_schema(cls):
        template = io.MatchType.Template("T", allowed_types=[io.Image, io.Mask])
        return IO.Schema(
            node_id="V3PassThrough",
            inputs=[io.MatchType.Input("value", template=template)],
            outputs=[io.MatchType.Output(template=template, display_name="value")],
        )

    @classmethod
    def execute(cls, value):
        return io.NodeOutput(value)


class Scale(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="V3Scale",
            inputs=[
                io.Image.Input("image"),
                io.MultiType.Input(io.Float.Input("factor", default=0.5, min=0.0), types=[io.Int]),
                io.Combo.Input(
                    "preset",
                    options=["a", "b"],
                    remote=io.RemoteOptions(route="/v3test/presets", refresh_button=True),
                ),
            ],
            outputs=[io.Image.Output(id="image")],  # an output sharing an input's id
        )

    @classmethod
    def execute(cls, image, factor, preset):
        SEEN.append(("scale", factor, preset))
        return io.NodeOutput(image * factor)


class MakeSegs(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="V3MakeSegs",
            inputs=[io.Image.Input("image")],
            outputs=[io.SEGS.Output(), io.Mesh.Output()],
        )

    @classmethod
    def execute(cls, image):
        return io.NodeOutput([("seg", tuple(image.shape))], {"vertices": 3})


class CountSegs(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="V3CountSegs",
            inputs=[io.SEGS.Input("segs"), io.Mesh.Input("mesh")],
            outputs=[io.Int.Output()],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, segs, mesh):
        SEEN.append(("segs", segs, mesh))
        return io.NodeOutput(len(segs) + mesh["vertices"], ui={"text": [str(len(segs))]})


class Steps(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="V3Steps",
            inputs=[io.Image.Input("image"), io.Boolean.Input("sync", default=False)],
            outputs=[io.Image.Output()],
        )

    @classmethod
    async def execute(cls, image, sync):
        if sync:
            ComfyAPISync().execution.set_progress(1, 2)
        else:
            await ComfyAPI().execution.set_progress(1, 2, preview_image=image)
        return io.NodeOutput(image)


class Save(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="V3Save",
            inputs=[io.Image.Input("images"), io.String.Input("filename_prefix", default="v3")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, filename_prefix):
        return io.NodeOutput(ui=ui.ImageSaveHelper.get_save_images_ui(images, filename_prefix, cls=cls))


class Extension(ComfyExtension):
    async def get_node_list(self):
        return [Guided, PassThrough, Scale, MakeSegs, CountSegs, Steps, Save]


async def comfy_entrypoint():
    return Extension()
"""


@pytest.fixture
def runtime(write_pack, make_runtime):
    write_pack("surface_pack", {"__init__.py": PACK})
    return make_runtime()


def _seen() -> list:
    return __import__("custom_nodes.surface_pack", fromlist=["SEEN"]).SEEN


def _preview(source: str) -> dict:
    return {"class_type": "PreviewImage", "inputs": {"images": [source, 0]}}


def test_dynamic_slot_is_served_as_comfyui_serves_it(runtime):
    info = object_info(runtime.registry)["V3Guided"]
    assert info["input"]["optional"]["guide"] == [
        "COMFY_DYNAMICSLOT_V3",
        {
            "tooltip": "Optional guide mask.",
            "lazy": True,
            "slotType": "MASK",
            "inputs": {
                "required": {"strength": ["FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0}]}
            },
        },
    ]
    assert "guide" not in info["input"]["required"]  # a DynamicSlot is always optional
    assert info["input_order"]["optional"] == ["guide"]


def _guided(**inputs) -> dict:
    return {
        "1": empty_image(),
        "2": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 8, "height": 8}},
        "9": {"class_type": "V3Guided", "inputs": {"image": ["1", 0], **inputs}},
        "10": _preview("9"),
    }


def test_dynamic_slot_connected_hands_its_value_and_inputs(runtime):
    prompt = _guided(**{"guide": ["2", 0], "guide.strength": 0.25, "use_guide": True})
    result = runtime.executor.run_prompt(prompt)
    assert result.error is None, result.error
    assert _seen()[-1] == ("guided", ["guide", "strength"], True)
    ((image,),) = result.values["9"]
    torch.testing.assert_close(image, torch.full_like(image, 0.75))


def test_dynamic_slot_unconnected_is_absent_and_its_inputs_ignored(runtime):
    result = runtime.executor.run_prompt(_guided(use_guide=True, **{"guide.strength": 9.0}))
    assert result.error is None, result.error
    assert _seen()[-1] == ("guided", None, True)


def test_lazy_dynamic_slot_source_runs_only_when_asked(runtime):
    result = runtime.executor.run_prompt(
        _guided(**{"guide": ["2", 0], "guide.strength": 0.5, "use_guide": False})
    )
    assert result.error is None, result.error
    assert "2" not in result.values  # the guide's SolidMask never ran
    assert _seen()[-1] == ("guided", ["guide", "strength"], False)


def test_dynamic_slot_inputs_are_validated_under_dotted_names(runtime):
    prompt = _guided(**{"guide": ["2", 0], "guide.strength": 3.0, "use_guide": True})
    with pytest.raises(PromptValidationError) as info:
        runtime.executor.validate(prompt)
    (error,) = info.value.node_errors["9"]["errors"]
    assert (error["type"], error["details"]) == ("value_bigger_than_max", "guide.strength")
    wrong = _guided(**{"guide": ["1", 0], "guide.strength": 0.5, "use_guide": True})
    with pytest.raises(PromptValidationError) as info:
        runtime.executor.validate(wrong)
    (error,) = info.value.node_errors["9"]["errors"]
    assert (error["type"], error["extra_info"]["input_name"]) == ("return_type_mismatch", "guide")


def test_match_type_is_served_and_passes_any_allowed_value(runtime):
    info = object_info(runtime.registry)["V3PassThrough"]
    template = {"template_id": "T", "allowed_types": "IMAGE,MASK"}
    assert info["input"]["required"]["value"] == ["COMFY_MATCHTYPE_V3", {"template": template}]
    assert info["output"] == ["COMFY_MATCHTYPE_V3"]
    assert info["output_name"] == ["value"]
    assert info["output_matchtypes"] == ["T"]
    prompt = {
        "1": empty_image(),
        "9": {"class_type": "V3PassThrough", "inputs": {"value": ["1", 0]}},
        "10": _preview("9"),  # a match-type output links into an IMAGE input
    }
    result = runtime.executor.run_prompt(prompt)
    assert result.error is None, result.error
    torch.testing.assert_close(result.values["9"][0][0], result.values["1"][0][0])


def test_multi_type_widget_takes_a_constant_or_an_int_link(runtime):
    info = object_info(runtime.registry)["V3Scale"]
    assert info["input"]["required"]["factor"] == [
        "FLOAT,INT",
        {"default": 0.5, "widgetType": "FLOAT", "min": 0.0},
    ]
    assert info["input"]["required"]["preset"][1]["remote"] == {
        "route": "/v3test/presets",
        "refresh_button": True,
        "control_after_refresh": "first",
    }
    base = {"1": empty_image(), "10": _preview("9")}
    result = runtime.executor.run_prompt(
        {
            **base,
            "9": {
                "class_type": "V3Scale",
                "inputs": {"image": ["1", 0], "factor": 0.5, "preset": "b"},
            },
        }
    )
    assert result.error is None, result.error
    assert _seen()[-1] == ("scale", 0.5, "b")
    linked = {
        **base,
        "2": {"class_type": "PrimitiveInt", "inputs": {"value": 2}},
        "9": {
            "class_type": "V3Scale",
            "inputs": {"image": ["1", 0], "factor": ["2", 0], "preset": "a"},
        },
    }
    result = runtime.executor.run_prompt(linked)
    assert result.error is None, result.error
    assert _seen()[-1] == ("scale", 2, "a")


def test_wider_socket_types_flow_between_pack_nodes(runtime):
    info = object_info(runtime.registry)
    assert info["V3MakeSegs"]["output"] == ["SEGS", "MESH"]
    assert info["V3CountSegs"]["input"]["required"] == {"segs": ["SEGS", {}], "mesh": ["MESH", {}]}
    prompt = {
        "1": empty_image(4),
        "2": {"class_type": "V3MakeSegs", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "V3CountSegs", "inputs": {"segs": ["2", 0], "mesh": ["2", 1]}},
    }
    result = runtime.executor.run_prompt(prompt)
    assert result.error is None, result.error
    assert _seen()[-1] == ("segs", [("seg", (1, 4, 4, 3))], {"vertices": 3})
    assert result.outputs["3"] == {"text": ["1"]}
    crossed = {
        **prompt,
        "3": {"class_type": "V3CountSegs", "inputs": {"segs": ["2", 1], "mesh": ["2", 1]}},
    }
    with pytest.raises(PromptValidationError) as info:
        runtime.executor.validate(crossed)
    (error,) = info.value.node_errors["3"]["errors"]
    assert (error["type"], error["extra_info"]["input_name"]) == ("return_type_mismatch", "segs")


@pytest.mark.parametrize("sync", [False, True])
def test_comfy_api_set_progress_reports_for_the_running_node(runtime, sync):
    events = []
    prompt = {
        "1": empty_image(16, 0xFF0000),
        "9": {"class_type": "V3Steps", "inputs": {"image": ["1", 0], "sync": sync}},
        "10": _preview("9"),
    }
    result = runtime.executor.run_prompt(prompt, on_event=events.append)
    assert result.error is None, result.error
    (progress,) = [e for e in events if e.type == "progress" and e.data["node"] == "9"]
    assert (progress.data["value"], progress.data["max"]) == (1, 2)
    if sync:
        assert progress.preview is None
    else:
        from PIL import Image

        assert progress.preview.image_format == "JPEG"
        picture = Image.open(io.BytesIO(progress.preview.data))
        assert picture.size == (16, 16)
        red, green, _ = picture.getpixel((8, 8))
        assert red > 240 and green < 16


def test_image_save_helper_writes_pngs_with_the_prompt(runtime):
    from PIL import Image

    prompt = {
        "1": empty_image(8, 0x00FF00),
        "9": {"class_type": "V3Save", "inputs": {"images": ["1", 0], "filename_prefix": "v3save"}},
    }
    result = runtime.executor.run_prompt(prompt)
    assert result.error is None, result.error
    (saved,) = result.outputs["9"]["images"]
    assert saved == {"filename": "v3save_00001_.png", "subfolder": "", "type": "output"}
    path = runtime.settings.directory("output") / saved["filename"]
    with Image.open(path) as picture:
        assert picture.size == (8, 8) and picture.getpixel((4, 4)) == (0, 255, 0)
        assert json.loads(picture.info["prompt"])["9"]["class_type"] == "V3Save"


def test_async_execute_under_a_running_loop_keeps_the_nodes_context():
    """run_sync runs a coroutine on a worker thread when a loop is already running (loom
    serve); the running node's context must go with it, or ComfyAPI sees no node."""
    import asyncio
    import contextvars

    from loom_comfy_compat.v3 import run_sync

    marker = contextvars.ContextVar("marker", default=None)

    async def read() -> object:
        return marker.get()

    async def outer() -> object:
        marker.set("node 9")
        return run_sync(read())  # called from inside a running loop

    assert asyncio.run(outer()) == "node 9"
