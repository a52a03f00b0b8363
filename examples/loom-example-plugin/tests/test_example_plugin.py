"""Tests for the example plugin; run with the plugin installed: ``pytest tests``."""

from __future__ import annotations

from importlib import metadata

import pytest
import torch
from loom_example_plugin import plugin
from loom_example_plugin.nodes import ExampleImageBrightness

from loom.nodes.object_info import to_json
from loom.plugins import PluginHost
from loom.registry import Registry, collect


def test_plugin_is_installed() -> None:
    names = {ep.name: ep.value for ep in metadata.entry_points(group="loom")}
    assert names.get("example") == "loom_example_plugin.plugin"
    host = PluginHost(builtins=(), allow={"example"}).load()
    assert not host.failures
    assert "ExampleImageBrightness" in collect(host).nodes


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
