"""Subgraph flattening: ids "outer:inner", -10/-20 pseudo nodes, promoted widgets, nesting."""

from __future__ import annotations

from typing import Any

import pytest
from wf_builder import UIGraph, empty_image, invert, preview, save, socket

from loom.errors import PromptValidationError, WorkflowConversionError
from loom.workflow import convert_workflow

WF1_SUBGRAPH_EXPECTED = {
    "1": {
        "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0},
        "class_type": "EmptyImage",
        "_meta": {"title": "EmptyImage"},
    },
    "10:2": {
        "inputs": {"image": ["1", 0]},
        "class_type": "ImageInvert",
        "_meta": {"title": "Invert Image"},
    },
    "3": {
        "inputs": {"images": ["10:2", 0]},
        "class_type": "PreviewImage",
        "_meta": {"title": "My Preview"},
    },
    "4": {
        "inputs": {"filename_prefix": "compat_test", "images": ["10:2", 0]},
        "class_type": "SaveImage",
        "_meta": {"title": "Save Image"},
    },
}


def definition(
    def_id: str, inner: UIGraph, inputs: list[tuple[str, str]], outputs: list[tuple[str, str]]
) -> dict[str, Any]:
    """A subgraph definition; ``inner`` links may use -10 / -20 as origin / target."""
    data = inner.to_json(schema="object")
    result = {
        "id": def_id,
        "version": 1,
        "name": def_id,
        "revision": 0,
        "config": {},
        "state": {"lastNodeId": 0, "lastLinkId": 0, "lastGroupId": 0, "lastRerouteId": 0},
        "inputNode": {"id": -10, "bounding": [0, 0, 10, 10]},
        "outputNode": {"id": -20, "bounding": [0, 0, 10, 10]},
        "inputs": [
            {"id": f"{def_id}-in{i}", "name": n, "type": t, "linkIds": []}
            for i, (n, t) in enumerate(inputs)
        ],
        "outputs": [
            {"id": f"{def_id}-out{i}", "name": n, "type": t, "linkIds": []}
            for i, (n, t) in enumerate(outputs)
        ],
        "widgets": [],
        "nodes": data["nodes"],
        "links": data["links"],
        "groups": [],
        "extra": {},
    }
    if inner.definitions:
        result["definitions"] = {"subgraphs": inner.definitions}
    return result


def io_link(
    g: UIGraph, origin: Any, origin_slot: int, target: Any, target_slot: int, type_: str
) -> None:
    """A link inside a definition; -10 / -20 endpoints only exist as ids."""
    link_id = 100 + len(g.links)
    g.links.append([link_id, origin, origin_slot, target, target_slot, type_])
    if target in g.nodes:
        g.nodes[target]["inputs"][target_slot]["link"] = link_id
    if origin in g.nodes:
        g.nodes[origin]["outputs"][origin_slot]["links"].append(link_id)


def instance(
    g: UIGraph, node_id: Any, def_id: str, inputs: list[dict], outputs: list[str], **kw: Any
) -> dict:
    return g.node(node_id, def_id, inputs=inputs, outputs=outputs, **kw)


def invert_definition(def_id: str = "sg-invert") -> dict[str, Any]:
    inner = UIGraph()
    invert(inner, 3)
    io_link(inner, -10, 0, 3, 0, "IMAGE")
    io_link(inner, 3, 0, -20, 0, "IMAGE")
    return definition(def_id, inner, [("image", "IMAGE")], [("IMAGE", "IMAGE")])


def test_wf1_converted_to_subgraph(registry, load_workflow):
    assert convert_workflow(load_workflow("wf1_subgraph.json"), registry) == WF1_SUBGRAPH_EXPECTED


def test_nested_subgraphs_and_two_instances(registry):
    outer = UIGraph()
    instance(outer, 5, "sg-invert", [socket("image", "IMAGE")], ["IMAGE"])
    invert(outer, 6)
    io_link(outer, -10, 0, 5, 0, "IMAGE")
    io_link(outer, 5, 0, 6, 0, "IMAGE")
    io_link(outer, 6, 0, -20, 0, "IMAGE")
    outer.definitions.append(invert_definition())  # nested definitions are found too
    g = UIGraph()
    g.definitions.append(definition("sg-outer", outer, [("image", "IMAGE")], [("IMAGE", "IMAGE")]))
    empty_image(g, 1)
    instance(g, 20, "sg-outer", [socket("image", "IMAGE")], ["IMAGE"])
    instance(g, 21, "sg-outer", [socket("image", "IMAGE")], ["IMAGE"])
    preview(g, 3)
    g.link(1, 0, 20, 0, "IMAGE")
    g.link(20, 0, 21, 0, "IMAGE")
    g.link(21, 0, 3, 0, "IMAGE")
    prompt = convert_workflow(g.to_json(), registry)
    assert set(prompt) == {"1", "20:5:3", "20:6", "21:5:3", "21:6", "3"}
    assert prompt["20:5:3"]["inputs"] == {"image": ["1", 0]}
    assert prompt["20:6"]["inputs"] == {"image": ["20:5:3", 0]}
    assert prompt["21:5:3"]["inputs"] == {"image": ["20:6", 0]}
    assert prompt["3"]["inputs"] == {"images": ["21:6", 0]}


def canvas_definition() -> dict[str, Any]:
    """EmptyImage whose width comes from the subgraph's INT input."""
    inner = UIGraph()
    empty_image(inner, 1, widgets=[8, 9, 1, 0])
    io_link(inner, -10, 0, 1, 0, "INT")
    io_link(inner, 1, 0, -20, 0, "IMAGE")
    return definition("sg-canvas", inner, [("width", "INT")], [("IMAGE", "IMAGE")])


def canvas_graph() -> UIGraph:
    g = UIGraph()
    g.definitions.append(canvas_definition())
    instance(g, 30, "sg-canvas", [socket("width", "INT", widget=True)], ["IMAGE"], widgets=[100])
    preview(g, 2)
    g.link(30, 0, 2, 0, "IMAGE")
    return g


def test_subgraph_input_widget_value(registry):
    prompt = convert_workflow(canvas_graph().to_json(), registry)
    assert prompt["30:1"]["inputs"] == {"width": 100, "height": 9, "batch_size": 1, "color": 0}
    assert prompt["2"]["inputs"] == {"images": ["30:1", 0]}


def test_subgraph_input_widget_linked_outside(registry):
    g = canvas_graph()
    g.node(
        4,
        "PrimitiveInt",
        inputs=[socket("value", "INT", True)],
        outputs=["INT"],
        widgets=[7, "fixed"],
    )
    g.link(4, 0, 30, 0, "INT")
    assert convert_workflow(g.to_json(), registry)["30:1"]["inputs"]["width"] == ["4", 0]


def test_primitive_node_feeds_subgraph_input_widget(registry):
    g = canvas_graph()
    g.node(4, "PrimitiveNode", outputs=["INT"], widgets=[640, "fixed"])
    g.link(4, 0, 30, 0, "INT")
    assert convert_workflow(g.to_json(), registry)["30:1"]["inputs"]["width"] == 640


def test_proxy_widgets_override_inner_values(registry):
    inner = UIGraph()
    save(inner, 3, "inner")
    io_link(inner, -10, 0, 3, 0, "IMAGE")
    g = UIGraph()
    g.definitions.append(definition("sg-save", inner, [("images", "IMAGE")], []))
    empty_image(g, 1)
    instance(
        g,
        40,
        "sg-save",
        [socket("images", "IMAGE")],
        [],
        widgets=["promoted"],
        properties={"proxyWidgets": [["3", "filename_prefix"]]},
    )
    instance(g, 41, "sg-save", [socket("images", "IMAGE")], [])
    g.link(1, 0, 40, 0, "IMAGE")
    g.link(1, 0, 41, 0, "IMAGE")
    prompt = convert_workflow(g.to_json(), registry)
    assert prompt["40:3"]["inputs"] == {"filename_prefix": "promoted", "images": ["1", 0]}
    assert prompt["41:3"]["inputs"] == {"filename_prefix": "inner", "images": ["1", 0]}


def test_null_proxy_widget_value_keeps_the_inner_value(registry):
    # ComfyUI's Flux Fill templates save a promoted prompt box as null beside a real seed:
    # the frontend queues the inner node's own text, so the null must not replace it
    inner = UIGraph()
    save(inner, 3, "inner")
    io_link(inner, -10, 0, 3, 0, "IMAGE")
    g = UIGraph()
    g.definitions.append(definition("sg-save", inner, [("images", "IMAGE")], []))
    empty_image(g, 1)
    instance(
        g,
        40,
        "sg-save",
        [socket("images", "IMAGE")],
        [],
        widgets=[None],
        properties={"proxyWidgets": [["3", "filename_prefix"]]},
    )
    g.link(1, 0, 40, 0, "IMAGE")
    prompt = convert_workflow(g.to_json(), registry)
    assert prompt["40:3"]["inputs"] == {"filename_prefix": "inner", "images": ["1", 0]}


@pytest.mark.parametrize(("mode", "expected"), [(2, {}), (4, {"images": ["1", 0]})])
def test_muted_or_bypassed_instance(registry, mode, expected):
    g = UIGraph()
    g.definitions.append(invert_definition())
    empty_image(g, 1)
    instance(g, 20, "sg-invert", [socket("image", "IMAGE")], ["IMAGE"], mode=mode)
    preview(g, 3)
    g.link(1, 0, 20, 0, "IMAGE")
    g.link(20, 0, 3, 0, "IMAGE")
    prompt = convert_workflow(g.to_json(), registry)
    assert set(prompt) == {"1", "3"}
    assert prompt["3"]["inputs"] == expected


def test_unconnected_subgraph_input_leaves_inner_input_out(registry):
    g = UIGraph()
    g.definitions.append(invert_definition())
    instance(g, 20, "sg-invert", [socket("image", "IMAGE")], ["IMAGE"])
    prompt = convert_workflow(g.to_json(), registry)
    assert prompt == {
        "20:3": {"inputs": {}, "class_type": "ImageInvert", "_meta": {"title": "Invert Image"}}
    }


def test_subgraph_containing_itself_raises(registry):
    inner = UIGraph()
    instance(inner, 2, "sg-loop", [], [])
    g = UIGraph()
    g.definitions.append(definition("sg-loop", inner, [], []))
    instance(g, 1, "sg-loop", [], [])
    with pytest.raises(WorkflowConversionError, match=r"node 1:2 \(sg-loop\).*contains itself"):
        convert_workflow(g.to_json(), registry)


def test_broken_link_inside_definition_names_inner_node(registry):
    definition_ = invert_definition()
    definition_["links"] = [link for link in definition_["links"] if link["target_id"] != 3]
    g = UIGraph()
    g.definitions.append(definition_)
    empty_image(g, 1)
    instance(g, 20, "sg-invert", [socket("image", "IMAGE")], ["IMAGE"])
    g.link(1, 0, 20, 0, "IMAGE")
    with pytest.raises(WorkflowConversionError, match=r"node 20:3 \(ImageInvert\): input 'image'"):
        convert_workflow(g.to_json(), registry)


def test_unknown_type_inside_subgraph_names_inner_id(registry):
    inner = UIGraph()
    inner.node(3, "Missing")
    g = UIGraph()
    g.definitions.append(definition("sg-x", inner, [], []))
    instance(g, 9, "sg-x", [], [])
    with pytest.raises(PromptValidationError, match=r"node Missing does not exist.*'#9:3'"):
        convert_workflow(g.to_json(), registry)
