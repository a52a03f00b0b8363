"""Tests for the example plugin; run with the plugin installed: ``pytest tests``.

``loom_registry``, ``loom_runtime`` and ``loom_run`` are fixtures loom-core ships as a
pytest plugin (:mod:`loom.testing`): a host with core's built-ins and exactly the plugins
named, no entry-point scan.
"""

from __future__ import annotations

from importlib import metadata

import pytest
import torch
from loom_example_plugin import plugin
from loom_example_plugin.nodes import ExampleImageBrightness

from loom.nodes.object_info import to_json
from loom.registry import Registry


def test_plugin_is_installed(loom_registry) -> None:
    names = {ep.name: ep.value for ep in metadata.entry_points(group="loom")}
    assert names.get("example") == "loom_example_plugin.plugin"
    registry = loom_registry("example")
    assert registry.owner[("node", "ExampleImageBrightness")] == "example"


def test_the_node_runs_in_a_prompt(loom_runtime, loom_run) -> None:
    runtime = loom_runtime("example")
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0x404040},
        },
        "2": {"class_type": "ExampleImageBrightness", "inputs": {"image": ["1", 0], "factor": 2.0}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    record = loom_run(runtime, prompt)
    assert record.ok, record.error
    brighter = record.value("2")
    assert brighter.shape == (1, 8, 8, 3)
    assert torch.allclose(brighter, record.value("1") * 2.0)
    assert len(record.outputs["3"]["images"]) == 1
    assert record.event_types[-1] == "execution_success"


def test_register_nodes_registers_the_node() -> None:
    registered: list[type] = []
    plugin.register_nodes(registered.append)
    assert registered == [ExampleImageBrightness]


def test_object_info_entry() -> None:
    registry = Registry()
    definition = registry.add_node("example", ExampleImageBrightness)
    info = to_json(definition, registry)
    assert info["display_name"] == "Image Brightness (example)"
    assert info["output"] == ["IMAGE"]
    assert info["input"]["required"]["factor"][0] == "FLOAT"


@pytest.mark.parametrize("channels", [3, 4])
def test_brightness_scales_and_clamps(channels: int) -> None:
    image = torch.full((1, 2, 2, channels), 0.6)
    out = ExampleImageBrightness(image=image, factor=2.0).run(ctx=None)  # type: ignore[arg-type]
    assert out.shape == image.shape
    assert torch.equal(out[..., :3], torch.ones(1, 2, 2, 3))
    if channels == 4:
        assert torch.equal(out[..., 3], image[..., 3])
    assert torch.equal(image, torch.full((1, 2, 2, channels), 0.6))  # input untouched
