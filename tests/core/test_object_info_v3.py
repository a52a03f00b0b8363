"""Nodes ComfyUI 0.8 declares with its V3 schema are served in that form by /object_info.

The expected entries are written by hand from ComfyUI 0.8's rules (``comfy_api/latest/_io.py``:
``Schema.get_v1_info`` serialised with ``dataclasses.asdict``; inputs by ``add_to_dict_v1``).
"""

from __future__ import annotations

import loom
from loom.nodes.object_info import to_json
from loom.nodes.schema import compile_declarative
from loom.types import Image, Mask

CATEGORY = "testing/v3"


def _declare(class_type: str, v3: bool) -> type:
    @loom.node(
        class_type,
        category=CATEGORY,
        output_node=True,
        hidden={"unique_id": "UNIQUE_ID"},
        v3=v3,
    )
    class Pick:
        image: Image
        mode: str = loom.ui.combo(["grid", "rows"], default="rows", tooltip="layout")
        label: str = loom.ui.string("x")
        count: int = loom.ui.int(2, min=1, max=8)
        mask: Mask = loom.ui.input(optional=True)

        def run(self, ctx) -> Image:
            return self.image

    return Pick


def test_a_v3_node_is_served_as_comfyui_serves_a_v3_schema_node():
    entry = to_json(compile_declarative(_declare("TestV3Pick", v3=True)))
    assert entry == {
        "input": {
            "required": {
                "image": ["IMAGE", {}],
                "mode": [
                    "COMBO",
                    {
                        "tooltip": "layout",
                        "default": "rows",
                        "multiselect": False,
                        "options": ["grid", "rows"],
                    },
                ],
                "label": ["STRING", {"default": "x", "multiline": False}],
                "count": ["INT", {"default": 2, "min": 1, "max": 8}],
            },
            "optional": {"mask": ["MASK", {}]},
            # Schema.finalize gives every output node prompt and extra_pnginfo, after its own.
            "hidden": {
                "unique_id": ["UNIQUE_ID"],
                "prompt": ["PROMPT"],
                "extra_pnginfo": ["EXTRA_PNGINFO"],
            },
        },
        "input_order": {
            "required": ["image", "mode", "label", "count"],
            "optional": ["mask"],
            "hidden": ["unique_id", "prompt", "extra_pnginfo"],
        },
        "output": ["IMAGE"],
        "output_is_list": [False],
        "output_name": ["IMAGE"],
        "output_tooltips": [None],
        "output_matchtypes": None,
        "name": "TestV3Pick",
        "display_name": None,
        "description": "",
        "python_module": __name__,
        "category": CATEGORY,
        "output_node": True,
        "deprecated": False,
        "experimental": False,
        "api_node": False,
    }
    # Key order as ComfyUI's NodeInfoV1 dataclass writes it.
    assert list(entry)[:7] == [
        "input",
        "input_order",
        "output",
        "output_is_list",
        "output_name",
        "output_tooltips",
        "output_matchtypes",
    ]


def test_the_same_node_without_the_flag_keeps_the_classic_form():
    entry = to_json(compile_declarative(_declare("TestClassicPick", v3=False)))
    assert entry["input"]["required"]["image"] == ["IMAGE"]
    assert entry["input"]["required"]["mode"] == [
        ["grid", "rows"],
        {"default": "rows", "tooltip": "layout"},
    ]
    assert entry["input"]["required"]["label"] == ["STRING", {"default": "x"}]
    assert entry["input"]["hidden"] == {"unique_id": "UNIQUE_ID"}
    assert entry["display_name"] == "TestClassicPick"
    assert not {"output_matchtypes", "deprecated", "experimental", "api_node"} & set(entry)


def test_a_node_with_no_required_input_still_sends_an_empty_required_section():
    @loom.node("TestV3OnlyOptional", category=CATEGORY, v3=True)
    class OnlyOptional:
        mask: Mask = loom.ui.input(optional=True)

        def run(self, ctx) -> Mask:
            return self.mask

    entry = to_json(compile_declarative(OnlyOptional))
    assert entry["input"] == {"required": {}, "optional": {"mask": ["MASK", {}]}}
    assert entry["input_order"] == {"required": [], "optional": ["mask"]}


def test_image_to_mask_is_served_exactly_as_comfyui_0_8_serves_it():
    from loom.testing import make_registry

    registry = make_registry()
    assert to_json(registry.get_node("ImageToMask"), registry) == {
        "input": {
            "required": {
                "image": ["IMAGE", {}],
                "channel": [
                    "COMBO",
                    {"multiselect": False, "options": ["red", "green", "blue", "alpha"]},
                ],
            }
        },
        "input_order": {"required": ["image", "channel"]},
        "output": ["MASK"],
        "output_is_list": [False],
        "output_name": ["MASK"],
        "output_tooltips": [None],
        "output_matchtypes": None,
        "name": "ImageToMask",
        "display_name": "Convert Image to Mask",
        "description": "",
        "python_module": "comfy_extras.nodes_mask",
        "category": "mask",
        "output_node": False,
        "deprecated": False,
        "experimental": False,
        "api_node": False,
    }
