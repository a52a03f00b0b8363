"""The installed plugin: its entry point is listed and loading registers adapters and nodes."""

from __future__ import annotations

from importlib.metadata import entry_points

import torch

from loom.memory import ModelHandle
from loom.types import AdapterKeyMap


def test_plugin_is_installed():
    [ep] = [ep for ep in entry_points(group="loom") if ep.name == "lora"]
    assert ep.value == "loom_lora.plugin"


def test_loading_plugins_registers_adapters_and_nodes(loom_registry):
    registry = loom_registry("lora")
    assert set(registry.by_plugin["lora"]["weight_adapter"]) == {"lora", "loha", "lokr", "diff"}
    assert set(registry.by_plugin["lora"]["node"]) == {
        "LoraLoader",
        "LoraLoaderModelOnly",
        "LoraSave",
        "CreateHookLora",
        "CreateHookLoraModelOnly",
        "SetClipHooks",
    }


def test_fallback_key_map_names_a_bare_handle_by_its_own_keys():
    from loom_lora.plugin import adapter_key_map

    handle = ModelHandle(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    answer = adapter_key_map(model=handle, kind="model")
    assert isinstance(answer, AdapterKeyMap) and answer.handle is handle
    assert answer.keys == {
        "0": "0.weight",
        "diffusion_model.0": "0.weight",
        "lora_unet_0": "0.weight",
    }
    assert adapter_key_map(model=object(), kind="model") is None
