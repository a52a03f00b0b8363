"""A pack written the V3 way (``comfy_api.latest``), loaded from ``custom_nodes/`` through
its ``comfy_entrypoint`` and run by ``loom run``: combo, lazy, list, hidden, expansion,
output node with preview, validate_inputs, fingerprint_inputs, block_execution."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from compat_helpers import empty_image
from PIL import Image

from loom.nodes.object_info import object_info

V3_PACK = """
from comfy_api.latest import ComfyExtension, io, ui
from comfy_execution.graph_utils import GraphBuilder

RUNS = []


class Scale(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="V3Scale",
            display_name="Scale (V3)",
            category="v3test",
            description="Scale or invert an image.",
            inputs=[
                io.Image.Input("image"),
                io.Float.Input("factor", default=0.5, min=0.0, max=1.0, step=0.01),
                io.Combo.Input("mode", options=["multiply", "invert"], default="multiply"),
            ],
            outputs=[io.Image.Output(display_name="scaled", tooltip="the result")],
            hidden=[io.Hidden.unique_id, io.Hidden.prompt],
        )

    @classmethod
    def validate_inputs(cls, factor):
        return True if factor != 0.25 else "factor 0.25 is refused by the pack"

    @classmethod
    def execute(cls, image, factor, mode):
        RUNS.append(("V3Scale", cls.hidden.unique_id, sorted(cls.hidden.prompt)))
        return io.NodeOutput(image * factor if mode == "multiply" else 1.0 - image)


class Pick(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="V3Pick",
            category="v3test",
            inputs=[
                io.Boolean.Input("use_first", default=True),
                io.Image.Input("first", lazy=True),
                io.Image.Input("second", lazy=True),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def check_lazy_status(cls, use_first, first=None, second=None):
        return ["first"] if use_first else ["second"]

    @classmethod
    def execute(cls, use_first, first=None, second=None):
        return io.NodeOutput(first if use_first else second)


class Boom(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="V3Boom", category="v3test",
            inputs=[io.Image.Input("image")], outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, image):
        raise RuntimeError("V3Boom must not run")


class Split(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="V3Split", category="v3test",
            inputs=[io.Image.Input("image"), io.Int.Input("count", default=2, min=1, max=8)],
            outputs=[io.Image.Output(is_output_list=True), io.Int.Output(is_output_list=True)],
        )

    @classmethod
    def execute(cls, image, count):
        return io.NodeOutput([image * (i + 1) / count for i in range(count)], list(range(count)))


class InvertTwice(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="V3InvertTwice", category="v3test", enable_expand=True,
            inputs=[io.Image.Input("image")], outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, image):
        graph = GraphBuilder()
        first = graph.node("ImageInvert", image=image)
        second = graph.node("ImageInvert", image=first.out(0))
        return io.NodeOutput(second.out(0), expand=graph.finalize())


class Show(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="V3Show", category="v3test", is_output_node=True,
            inputs=[io.Image.Input("images")],
        )

    @classmethod
    def execute(cls, images):
        RUNS.append(("V3Show", cls.hidden.extra_pnginfo))
        return io.NodeOutput(ui=ui.PreviewImage(images, cls=cls))


class Counter(io.ComfyNode):
    SEEN = []
    VERSION = 1

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="V3Counter", category="v3test",
            inputs=[io.Image.Input("image"), io.String.Input("tag", default="a")],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def fingerprint_inputs(cls, tag):
        return (tag, Counter.VERSION)

    @classmethod
    async def execute(cls, image, tag):
        cls.SEEN.append(tag)
        return io.NodeOutput(image)


class Gate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="V3Gate", category="v3test",
            inputs=[io.Image.Input("image")], outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, image):
        return io.NodeOutput(block_execution="the gate is closed")


class Extension(ComfyExtension):
    async def get_node_list(self):
        return [Scale, Pick, Boom, Split, InvertTwice, Show, Counter, Gate]


async def comfy_entrypoint():
    return Extension()
"""


@pytest.fixture
def v3_pack(write_pack):
    return write_pack("v3_pack", {"__init__.py": V3_PACK})


def pixels(path: Path) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.array(Image.open(path)).astype("float32") / 255.0)


def test_v3_schema_is_served_as_comfyui_serves_it(v3_pack, make_runtime):
    info = object_info(make_runtime().registry)["V3Scale"]

    assert info["input"]["required"] == {
        "image": ["IMAGE", {}],
        "factor": ["FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}],
        "mode": [
            "COMBO",
            {"default": "multiply", "multiselect": False, "options": ["multiply", "invert"]},
        ],
    }
    assert info["input"]["hidden"] == {"unique_id": ["UNIQUE_ID"], "prompt": ["PROMPT"]}
    assert info["output"] == ["IMAGE"] and info["output_name"] == ["scaled"]
    assert info["output_tooltips"] == ["the result"]
    assert info["python_module"] == "custom_nodes.v3_pack"
    assert (info["display_name"], info["category"]) == ("Scale (V3)", "v3test")
    assert info["description"] == "Scale or invert an image."
    # ComfyUI sends every NodeInfoV1 key for a V3 node, and null for a missing display name.
    flags = ("output_matchtypes", "deprecated", "experimental", "api_node")
    assert tuple(info[key] for key in flags) == (None, False, False, False)
    assert object_info(make_runtime().registry)["V3Pick"]["display_name"] is None
    show = object_info(make_runtime().registry)["V3Show"]
    assert show["output_node"] is True
    assert show["input"]["hidden"] == {"prompt": ["PROMPT"], "extra_pnginfo": ["EXTRA_PNGINFO"]}


def test_v3_pack_runs_from_the_cli_with_combo_hidden_and_preview(v3_pack, base, run_cli):
    prompt = {
        "1": empty_image(),
        "2": {
            "class_type": "V3Scale",
            "inputs": {"image": ["1", 0], "factor": 0.5, "mode": "multiply"},
        },
        "3": {"class_type": "V3Show", "inputs": {"images": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "v3"}},
    }
    code, out, err = run_cli(prompt)

    assert code == 0, err
    paths = [Path(line) for line in out.split()]
    preview = [p for p in paths if p.parent == base / "temp"]
    saved = [p for p in paths if p.parent == base / "output"]
    assert len(preview) == 1 and len(saved) == 1
    assert torch.allclose(pixels(preview[0]), torch.full((8, 8, 3), 0.5), atol=1 / 255)
    runs = __import__("custom_nodes.v3_pack", fromlist=["RUNS"]).RUNS
    assert ("V3Scale", "2", ["1", "2", "3", "4"]) in runs


def test_v3_lazy_input_only_evaluates_what_check_lazy_status_asks_for(v3_pack, run_cli):
    prompt = {
        "1": empty_image(color=0),
        "2": {"class_type": "V3Boom", "inputs": {"image": ["1", 0]}},
        "3": {
            "class_type": "V3Pick",
            "inputs": {"use_first": True, "first": ["1", 0], "second": ["2", 0]},
        },
        "4": {"class_type": "V3Show", "inputs": {"images": ["3", 0]}},
    }
    assert run_cli(prompt)[0] == 0
    prompt["3"]["inputs"]["use_first"] = False
    code, _, err = run_cli(prompt)
    assert code == 1 and "V3Boom must not run" in err


def test_v3_list_outputs_expansion_and_blocking(v3_pack, run_cli, make_runtime):
    prompt = {
        "1": empty_image(color=0),
        "2": {"class_type": "V3Split", "inputs": {"image": ["1", 0], "count": 3}},
        "3": {"class_type": "V3InvertTwice", "inputs": {"image": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}},
    }
    result = make_runtime().executor.run_prompt(prompt)
    assert result.error is None, result.error
    assert len(result.values["2"][0]) == 3 and result.values["2"][1] == [0, 1, 2]
    assert len(result.outputs["4"]["images"]) == 3  # the list mapped over the expansion

    prompt["3"] = {"class_type": "V3Gate", "inputs": {"image": ["1", 0]}}
    events = []
    blocked = make_runtime().executor.run_prompt(prompt, on_event=events.append)
    assert "4" not in blocked.outputs  # SaveImage was blocked, not run
    errors = [e.data for e in events if e.type == "execution_error"]
    assert errors and errors[0]["node_id"] == "4"
    assert errors[0]["exception_message"] == "Execution Blocked: the gate is closed"


def test_v3_validate_inputs_message_reaches_the_user(v3_pack, run_cli):
    prompt = {
        "1": empty_image(),
        "2": {
            "class_type": "V3Scale",
            "inputs": {"image": ["1", 0], "factor": 0.25, "mode": "invert"},
        },
        "3": {"class_type": "V3Show", "inputs": {"images": ["2", 0]}},
    }
    code, _, err = run_cli(prompt)
    assert code == 2
    assert "factor 0.25 is refused by the pack" in err and "node 2" in err


def test_v3_fingerprint_inputs_decides_reuse_and_async_execute_runs(v3_pack, make_runtime):
    runtime = make_runtime()
    prompt = {
        "1": empty_image(),
        "2": {"class_type": "V3Counter", "inputs": {"image": ["1", 0], "tag": "A"}},
        "3": {"class_type": "V3Show", "inputs": {"images": ["2", 0]}},
    }
    counter = runtime.registry.nodes["V3Counter"].source_class
    assert runtime.executor.run_prompt(prompt).error is None
    assert runtime.executor.run_prompt(prompt).error is None  # same fingerprint: reused
    assert counter.SEEN == ["A"]
    counter.VERSION = 2  # the fingerprint changes: the node runs again
    assert runtime.executor.run_prompt(prompt).error is None
    assert counter.SEEN == ["A", "A"]


def test_v3_malformed_schema_fails_at_registration_naming_the_problem(write_pack, make_runtime):
    write_pack(
        "bad_v3",
        {
            "__init__.py": """
            from comfy_api.latest import ComfyExtension, io

            class Twice(io.ComfyNode):
                @classmethod
                def define_schema(cls):
                    return io.Schema(node_id="Twice", inputs=[io.Int.Input("a"), io.Int.Input("a")])

                @classmethod
                def execute(cls, a):
                    return io.NodeOutput()

            class Ext(ComfyExtension):
                async def get_node_list(self):
                    return [Twice]

            async def comfy_entrypoint():
                return Ext()
            """
        },
    )
    registry = make_runtime().registry
    assert "Twice" not in registry.nodes
    assert any("input ids must be unique" in str(f) and "'a'" in str(f) for f in registry.failures)


def test_versioned_alias_is_the_same_api():
    import comfy_api.latest
    import comfy_api.v0_0_2

    assert comfy_api.v0_0_2.io.ComfyNode is comfy_api.latest.io.ComfyNode
    assert comfy_api.v0_0_2.ComfyExtension is comfy_api.latest.ComfyExtension


def test_v3_input_named_like_a_hidden_one_reaches_execute(write_pack, make_runtime):
    write_pack(
        "text_v3",
        {
            "__init__.py": """
            from comfy_api.latest import ComfyExtension, io

            class Echo(io.ComfyNode):
                @classmethod
                def define_schema(cls):
                    return io.Schema(
                        node_id="V3Echo", is_output_node=True,
                        inputs=[io.String.Input("prompt", multiline=True)],
                        outputs=[io.String.Output()],
                        hidden=[io.Hidden.unique_id],
                    )

                @classmethod
                def execute(cls, prompt):
                    return io.NodeOutput(prompt + " #" + cls.hidden.unique_id)

            class Ext(ComfyExtension):
                async def get_node_list(self):
                    return [Echo]

            async def comfy_entrypoint():
                return Ext()
            """
        },
    )
    runtime = make_runtime()
    info = object_info(runtime.registry)["V3Echo"]["input"]
    assert info["required"]["prompt"] == ["STRING", {"multiline": True}]
    # An output node gets the hidden prompt as well; the string input keeps its own name.
    result = runtime.executor.run_prompt(
        {"7": {"class_type": "V3Echo", "inputs": {"prompt": "a cat"}}}
    )
    assert result.error is None, result.error
    assert result.values["7"] == (["a cat #7"],)
