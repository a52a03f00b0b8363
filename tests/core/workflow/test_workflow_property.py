"""Property: random small DAG workflows convert, or fail only with WorkflowConversionError."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wf_builder import UIGraph, socket, to_object_links
from wf_stub_nodes import build_registry

from loom.errors import PromptValidationError, WorkflowConversionError
from loom.workflow import convert_workflow

REGISTRY = build_registry()

# type -> (input sockets as (name, type, is_widget), output types)
CATALOG: dict[str, tuple[list[tuple[str, str, bool]], list[str]]] = {
    "EmptyImage": ([("width", "INT", True), ("height", "INT", True)], ["IMAGE"]),
    "ImageInvert": ([("image", "IMAGE", False)], ["IMAGE"]),
    "PreviewImage": ([("images", "IMAGE", False)], []),
    "SaveImage": ([("images", "IMAGE", False), ("filename_prefix", "STRING", True)], []),
    "KSampler": (
        [
            ("model", "MODEL", False),
            ("positive", "CONDITIONING", False),
            ("seed", "INT", True),
            ("latent_image", "LATENT", False),
        ],
        ["LATENT"],
    ),
    "LoadImage": ([("image", "COMBO", True)], ["IMAGE", "MASK"]),
    "MaskedImage": ([("mask", "MASK", False), ("image", "IMAGE", False)], ["IMAGE"]),
    "TwoImages": ([("image_a", "IMAGE", False), ("image_b", "IMAGE", False)], ["IMAGE", "IMAGE"]),
    "PrimitiveInt": ([("value", "INT", True)], ["INT"]),
    "Reroute": ([("", "*", False)], ["*"]),
    "PrimitiveNode": ([], ["INT"]),
    "Note": ([], []),
    "MarkdownNote": ([], []),
    "NotInstalled": ([("x", "IMAGE", False)], ["IMAGE"]),
}

scalars = st.one_of(
    st.integers(-5, 2**64),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)


@st.composite
def workflows(draw: st.DrawFn) -> dict[str, Any]:
    g = UIGraph()
    count = draw(st.integers(1, 10))
    types = draw(st.lists(st.sampled_from(sorted(CATALOG)), min_size=count, max_size=count))
    for node_id, type_ in enumerate(types, start=1):
        sockets, outputs = CATALOG[type_]
        widgets = draw(
            st.one_of(
                st.none(),
                st.lists(scalars, max_size=8),
                st.dictionaries(
                    st.sampled_from(["width", "seed", "image", "value", "zzz"]), scalars
                ),
            )
        )
        g.node(
            node_id,
            type_,
            inputs=[socket(n, t, w) for n, t, w in sockets],
            outputs=outputs,
            widgets=widgets,
            mode=draw(st.sampled_from([0, 0, 0, 1, 2, 3, 4])),
        )
        for slot in range(len(sockets)):
            if node_id > 1 and draw(st.booleans()):
                origin = draw(st.integers(1, node_id - 1))
                origin_outputs = len(CATALOG[types[origin - 1]][1])
                g.link(origin, draw(st.integers(0, max(origin_outputs, 1))), node_id, slot)
    wf = g.to_json()
    if wf["links"] and draw(st.integers(0, 9)) == 0:
        wf["links"].pop(draw(st.integers(0, len(wf["links"]) - 1)))  # broken link id
    if draw(st.integers(0, 9)) == 0:
        wf["nodes"].pop(draw(st.integers(0, len(wf["nodes"]) - 1)))  # missing origin node
    return to_object_links(wf) if draw(st.booleans()) else wf


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workflows())
def test_random_workflows_convert_or_raise_conversion_error(workflow):
    try:
        prompt = convert_workflow(workflow, REGISTRY)
    except (WorkflowConversionError, PromptValidationError) as exc:
        # unknown node types get the PromptValidationError an API prompt gets
        assert exc.message
        return
    ui_ids = {str(node["id"]) for node in workflow["nodes"]}
    for node_id, entry in prompt.items():
        assert node_id in ui_ids
        assert entry["class_type"] in CATALOG
        assert isinstance(entry["_meta"]["title"], str)
        for value in entry["inputs"].values():
            if isinstance(value, list):
                assert len(value) == 2 and value[0] in prompt and isinstance(value[1], int)
