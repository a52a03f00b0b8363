"""The ``/object_info`` document: every registered node in ComfyUI's JSON shape.

A :class:`NodeInfo` is built per node and unstructured by a private cattrs converter that
drops the keys ComfyUI only sends when set (``output_tooltips``, ``deprecated``,
``experimental``, ``api_node``). A node ComfyUI 0.8 declares with its V3 schema
(``NodeDef.v3``) gets the V3 form instead (:mod:`loom.nodes.v3_form`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn, override

from loom.nodes.spec import SECTIONS, NodeDef, NodeEnvironment
from loom.nodes.v3_form import v3_entry

if TYPE_CHECKING:
    from loom.registry import Registry


@attrs.frozen
class NodeInfo:
    """One node's entry in /object_info, field for field."""

    input: dict[str, Any]
    input_order: dict[str, list[str]]
    output: list[str]
    output_is_list: list[bool]
    output_name: list[str]
    name: str
    display_name: str | None
    description: str
    python_module: str
    category: str
    output_node: bool
    output_tooltips: list[str | None] | None = None
    deprecated: bool | None = None
    experimental: bool | None = None
    api_node: bool | None = None


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter()
    omit = override(omit_if_default=True)
    converter.register_unstructure_hook(
        NodeInfo,
        make_dict_unstructure_fn(
            NodeInfo,
            converter,
            output_tooltips=omit,
            deprecated=omit,
            experimental=omit,
            api_node=omit,
        ),
    )
    return converter


_converter = _make_converter()


def node_info(definition: NodeDef, env: NodeEnvironment | Registry | None = None) -> NodeInfo:
    """Build the NodeInfo of one node, evaluating live combo lists now (from ``env``)."""
    inputs = definition.input_types(env)
    # a section the node declares stays even when empty (ComfyUI sends INPUT_TYPES as given:
    # CombineHooks2 has "required": {})
    present = {section: dict(inputs[section]) for section in SECTIONS if section in inputs}
    return NodeInfo(
        input=present,
        input_order={section: list(values) for section, values in present.items()},
        output=[o.type for o in definition.outputs],
        output_is_list=[o.is_list for o in definition.outputs],
        output_name=[o.name for o in definition.outputs],
        name=definition.class_type,
        display_name=definition.display_name
        if definition.display_name is not None
        else definition.class_type,
        description=definition.description,
        python_module=definition.python_module,
        category=definition.category,
        output_node=definition.output_node,
        output_tooltips=[o.tooltip for o in definition.outputs]
        if definition.has_output_tooltips
        else None,
        deprecated=True if definition.deprecated else None,
        experimental=True if definition.experimental else None,
        api_node=definition.api_node,
    )


def to_json(definition: NodeDef, env: NodeEnvironment | Registry | None = None) -> dict[str, Any]:
    """One node's /object_info entry as plain JSON data."""
    if definition.v3:
        return v3_entry(definition, definition.input_types(env))
    return _converter.unstructure(node_info(definition, env))


def object_info(
    registry: Registry, env: NodeEnvironment | None = None
) -> dict[str, dict[str, Any]]:
    """The whole /object_info document; live combos from ``env`` (the runtime's)."""
    env = env or NodeEnvironment(registry=registry)
    return {
        class_type: to_json(definition, env) for class_type, definition in registry.nodes.items()
    }
