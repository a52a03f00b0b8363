"""Every node type the first-party plugins register agrees with bench/comfyui_0_8_nodes.json
(needs every plugin installed, so it lives with the end-to-end tests)."""

from __future__ import annotations

import json

from loom.nodes.coverage import compare_object_info


def test_the_comfyui_0_8_node_list_is_a_valid_reference_covering_every_loom_node():
    """bench/comfyui_0_8_nodes.json loads as a reference, every node type Loom registers is
    one of ComfyUI 0.8's (a Loom-only id would be a typo or a node ComfyUI does not have), with
    ComfyUI's category and python_module, and served in V3 form exactly when ComfyUI's is."""
    from importlib import metadata
    from pathlib import Path

    from loom.testing import make_registry

    path = Path(__file__).parents[2] / "bench" / "comfyui_0_8_nodes.json"
    reference = json.loads(path.read_text())
    assert all({"category", "python_module", "v3"} <= set(e) for e in reference.values())
    plugins = sorted({entry.name for entry in metadata.entry_points(group="loom")})
    registry = make_registry(*plugins)
    assert {"KSampler", "CLIPTextEncodeFlux", "ControlNetLoader"} <= set(registry.nodes)
    report = compare_object_info(reference, registry.nodes)
    assert report.extra == ()
    for class_type, definition in registry.nodes.items():
        facts = reference[class_type]
        assert definition.category == facts["category"], class_type
        assert definition.python_module == facts["python_module"], class_type
        assert definition.v3 == facts["v3"], class_type
