"""Hook implementations of the ``lora`` plugin: the weight adapters and the loader nodes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import loom

if TYPE_CHECKING:
    from loom.registration import RegisterNode, RegisterWeightAdapter
    from loom.types import AdapterKeyMap, AdapterTarget


@loom.hookimpl
def register_weight_adapters(register: RegisterWeightAdapter) -> None:
    from loom_lora.adapters import default_adapters

    for adapter in default_adapters():
        register(adapter)


@loom.hookimpl
def register_nodes(register: RegisterNode) -> None:
    from loom_lora.extract import LoraSave
    from loom_lora.hook_nodes import NODES as HOOK_NODES
    from loom_lora.nodes import NODES

    for node_class in NODES:
        register(node_class, python_module="nodes")
    register(
        LoraSave,
        python_module="comfy_extras.nodes_lora_extract",
        display_name="Extract and Save Lora",
    )
    for node_class in HOOK_NODES:
        register(node_class, python_module="comfy_extras.nodes_hooks")


@loom.hookimpl(trylast=True)
def adapter_key_map(model: object, kind: AdapterTarget) -> AdapterKeyMap | None:
    """Fallback for models no family maps: a CLIP wrapped by ``SetClipHooks`` answers for
    the CLIP inside; a bare ``loom.memory.ModelHandle`` is named by its own keys (ComfyUI's
    generic ``diffusion_model.*`` layout and kohya-flattened names)."""
    from loom_lora.generic import generic_key_map
    from loom_lora.hook_nodes import HookedClip

    if isinstance(model, HookedClip):  # SetClipHooks' CLIP: patch the CLIP it wraps
        return model.adapter_key_map(kind)
    return generic_key_map(model, kind)
