"""Primitive nodes: ComfyUI's comfy_extras/nodes_primitive.py, value in, value out."""

from __future__ import annotations

import sys

import pytest
from loom_toy_family import make_registry, run_node

from loom.nodes.object_info import to_json

EXPECTED = {
    "PrimitiveString": ("String", ["STRING", {"multiline": False}], "STRING", "text"),
    "PrimitiveStringMultiline": (
        "String (Multiline)",
        ["STRING", {"multiline": True}],
        "STRING",
        "a\nb",
    ),
    "PrimitiveInt": (
        "Int",
        ["INT", {"min": -sys.maxsize, "max": sys.maxsize, "control_after_generate": True}],
        "INT",
        -7,
    ),
    "PrimitiveFloat": (
        "Float",
        ["FLOAT", {"min": -sys.maxsize, "max": sys.maxsize, "step": 0.1}],
        "FLOAT",
        2.5,
    ),
    "PrimitiveBoolean": ("Boolean", ["BOOLEAN", {}], "BOOLEAN", True),
}


@pytest.fixture(scope="module")
def registry():
    return make_registry()


@pytest.mark.parametrize("node", list(EXPECTED))
def test_primitive(registry, node):
    display, spec, output, value = EXPECTED[node]
    info = to_json(registry.get_node(node), registry)
    assert info["input"] == {"required": {"value": spec}}
    assert (info["display_name"], info["category"]) == (display, "utils/primitive")
    assert (info["output"], info["output_name"]) == ([output], [output])
    assert info["python_module"] == "comfy_extras.nodes_primitive"
    assert info["description"] == ""
    assert run_node(registry, node, value=value) == (value,)


def test_registration_order_follows_comfyui(registry):
    assert [name for name in registry.nodes if name.startswith("Primitive")] == list(EXPECTED)
