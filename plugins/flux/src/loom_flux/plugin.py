"""Hook implementations of the ``flux`` plugin: the model family, its nodes, LoRA key maps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import loom


@loom.hookimpl
def register_model_families(register: Callable[..., None]) -> None:
    from loom.registration import DeferredModelFamily

    register(DeferredModelFamily("flux", _build_family))


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    from loom_sd15.merge_nodes import MODULE

    from loom_flux import model_patch_nodes
    from loom_flux.dit_patch_nodes import NODES as DIT_PATCH_NODES
    from loom_flux.merge_nodes import ModelMergeFlux1
    from loom_flux.nodes import NODES

    for node_class, module in (*NODES, *DIT_PATCH_NODES):
        register(node_class, python_module=module)
    for node_class in model_patch_nodes.NODES:
        register(node_class, python_module=model_patch_nodes.PYTHON_MODULE)
    register(ModelMergeFlux1, "ModelMergeFlux1", python_module=MODULE)


@loom.hookimpl
def node_problems(node_id: str, prompt: dict[str, Any], env: Any) -> list[str] | None:
    """A ``type=flux`` text encoder's T5 tokenizer files that are nowhere to be found."""
    from loom_flux.tokenizer_check import t5_tokenizer_problems

    return t5_tokenizer_problems(node_id, prompt, env) or None


@loom.hookimpl
def adapter_key_map(model: Any, kind: str) -> Any:
    from loom_flux.adapter_keys import flux_adapter_key_map

    return flux_adapter_key_map(model, kind)


def _build_family() -> Any:
    """The family, its model code and torch: imported on the first file it is asked about."""
    from loom_flux.family import FluxFamily

    return FluxFamily()
