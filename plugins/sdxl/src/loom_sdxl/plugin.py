"""Hook implementations of the ``sdxl`` plugin: the model family, its nodes, LoRA key maps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import loom

if TYPE_CHECKING:
    import click

    from loom.registration import RegisterModelFamily, RegisterNode
    from loom.types import AdapterKeyMap, AdapterTarget


@loom.hookimpl
def register_model_families(register: RegisterModelFamily) -> None:
    from loom.registration import DeferredModelFamily

    register(DeferredModelFamily("sdxl", _build_family))


@loom.hookimpl
def register_nodes(register: RegisterNode) -> None:
    from loom_sd15.merge_nodes import MODULE

    from loom_sdxl.merge_nodes import ModelMergeSDXL
    from loom_sdxl.nodes import COMFY_MODULE, NODES

    for node_class in NODES:
        register(node_class, python_module=COMFY_MODULE)
    register(ModelMergeSDXL, "ModelMergeSDXL", python_module=MODULE)


@loom.hookimpl
def adapter_key_map(model: Any, kind: AdapterTarget) -> AdapterKeyMap | None:
    from loom_sdxl.adapter_keys import sdxl_adapter_key_map

    return sdxl_adapter_key_map(model, kind)


@loom.hookimpl(trylast=True)
def register_commands(cli: click.Group) -> None:
    """``loom demo`` with ``--family sd15|sdxl``: replaces loom-sd15's (which it runs for sd15)."""
    from loom_sdxl.demo import demo_command

    cli.add_command(demo_command)


def _build_family() -> Any:
    """The family, its model code and torch: imported on the first file it is asked about."""
    from loom_sdxl.family import SDXLFamily

    return SDXLFamily()
