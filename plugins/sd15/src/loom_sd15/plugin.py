"""Hook implementations of the ``sd15`` plugin: the model family, its nodes, ``loom demo``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import loom

if TYPE_CHECKING:
    import click

    from loom import NodeEnvironment
    from loom.registration import RegisterModelFamily, RegisterNode
    from loom.types import AdapterKeyMap, AdapterTarget


@loom.hookimpl
def register_model_families(register: RegisterModelFamily) -> None:
    from loom.registration import DeferredModelFamily

    register(DeferredModelFamily("sd15", _build_family))


@loom.hookimpl
def register_nodes(register: RegisterNode) -> None:
    from loom_sd15.gligen_nodes import NODES as GLIGEN_NODES
    from loom_sd15.merge_nodes import MODULE, ModelMergeSD1
    from loom_sd15.nodes import NODES

    for node_class in (*NODES, *GLIGEN_NODES):
        register(node_class, python_module="nodes")
    register(ModelMergeSD1, "ModelMergeSD1", python_module=MODULE)
    from loom_sd15.freeu import NODES as FREEU_NODES

    for node_class in FREEU_NODES:
        register(node_class, python_module="comfy_extras.nodes_freelunch")
    from loom_sd15.attention_multiply import MODULE as MULTIPLY_MODULE
    from loom_sd15.attention_multiply import NODES as MULTIPLY_NODES

    for node_class in MULTIPLY_NODES:
        register(node_class, python_module=MULTIPLY_MODULE)
    from loom_sd15.hypernetwork_node import MODULE as HYPERNETWORK_MODULE
    from loom_sd15.hypernetwork_node import NODES as HYPERNETWORK_NODES

    for node_class in HYPERNETWORK_NODES:
        register(node_class, python_module=HYPERNETWORK_MODULE)
    from loom_sd15.pag import NODES as PAG_NODES

    for node_class in PAG_NODES:
        register(node_class, python_module="comfy_extras.nodes_pag")
    from loom_sd15.unet_patch_nodes import UNET_PATCH_NODES

    for node_class, module in UNET_PATCH_NODES.items():
        register(node_class, python_module=module)


@loom.hookimpl
def node_problems(node_id: str, prompt: dict[str, Any], env: NodeEnvironment) -> list[str] | None:
    """A text encoder's CLIP tokenizer files that are nowhere to be found."""
    from loom_sd15.tokenizer_check import tokenizer_problems

    return tokenizer_problems(node_id, prompt, env) or None


@loom.hookimpl
def register_commands(cli: click.Group) -> None:
    from loom_sd15.demo import demo_command

    if "demo" not in cli.commands:
        cli.add_command(demo_command)


@loom.hookimpl
def adapter_key_map(model: Any, kind: AdapterTarget) -> AdapterKeyMap | None:
    from loom_sd15.adapter_keys import sd15_adapter_key_map

    return sd15_adapter_key_map(model, kind)


def _build_family() -> Any:
    """The family, its model code and torch: imported on the first file it is asked about."""
    from loom_sd15.family import SD15Family

    return SD15Family()
