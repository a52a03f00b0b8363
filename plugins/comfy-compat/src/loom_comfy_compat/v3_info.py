"""The node-info records a V3 schema produces (``io.NodeInfoV1`` / ``io.NodeInfoV3``) and the
helpers that build their input dicts (``io.add_to_dict_v1`` / ``add_to_dict_v3``).

``NodeInfoV1`` is a V3 node as V1 code and ``/object_info`` see it: ``INPUT_TYPES``-shaped
inputs, ``input_order`` per section (``hidden`` included), parallel output lists, and
``output_matchtypes`` only when some output is an ``io.MatchType`` output. ``NodeInfoV3``
keeps each input and output as ``(io_type, as_dict())`` by id. Both are dataclasses, as in
ComfyUI, so a pack's ``dataclasses.asdict(info)`` works on them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypedDict


class V3Data(TypedDict, total=False):
    """What ComfyUI hands a V3 node's class clone: its hidden values and dynamic input paths."""

    hidden_inputs: dict[str, Any]
    dynamic_paths: dict[str, Any]


@dataclasses.dataclass
class NodeInfoV1:
    """A V3 node in V1 form (``ComfyNode.GET_NODE_INFO_V1()`` returns it as a dict)."""

    input: dict | None = None
    input_order: dict[str, list[str]] | None = None
    output: list[str] | None = None
    output_is_list: list[bool] | None = None
    output_name: list[str] | None = None
    output_tooltips: list[str | None] | None = None
    output_matchtypes: list[str | None] | None = None
    name: str | None = None
    display_name: str | None = None
    description: str | None = None
    python_module: Any = None
    category: str | None = None
    output_node: bool | None = None
    deprecated: bool | None = None
    experimental: bool | None = None
    api_node: bool | None = None


@dataclasses.dataclass
class NodeInfoV3:
    """A V3 node's inputs and outputs by id (``ComfyNode.GET_NODE_INFO_V3()``)."""

    input: dict | None = None
    output: dict | None = None
    hidden: list[str] | None = None
    name: str | None = None
    display_name: str | None = None
    description: str | None = None
    category: str | None = None
    output_node: bool | None = None
    deprecated: bool | None = None
    experimental: bool | None = None
    api_node: bool | None = None
    python_module: Any = None


def add_to_dict_v1(item: Any, sections: dict[str, dict[str, Any]]) -> None:
    """Put one input into an ``INPUT_TYPES`` dict: ``sections[required|optional][id]``."""
    section = "optional" if item.optional else "required"
    options = dict(item.as_dict())
    options.pop("optional", None)  # V1 says it by the section
    sections.setdefault(section, {})[item.id] = (item.get_io_type(), options)


def add_to_dict_v3(item: Any, entries: dict[str, Any]) -> None:
    """Put one input or output into a V3 info dict: ``entries[id] = (io_type, as_dict())``."""
    entries[item.id] = (item.get_io_type(), item.as_dict())


def create_input_dict_v1(inputs: list[Any]) -> dict[str, dict[str, Any]]:
    """Inputs as an ``INPUT_TYPES`` dict; ``required`` is always there."""
    sections: dict[str, dict[str, Any]] = {"required": {}}
    for item in inputs:
        add_to_dict_v1(item, sections)
    return sections


def template_id(output: Any) -> str | None:
    """A MatchType output's template id (``output_matchtypes``), else None."""
    template = getattr(output, "template", None)
    return getattr(template, "template_id", None)


def python_module(cls: Any) -> Any:
    return getattr(cls, "RELATIVE_PYTHON_MODULE", None) or "nodes"


def v1_info(schema: Any, cls: Any) -> NodeInfoV1:
    """``schema`` (finalized) in V1 form, for node class ``cls``."""
    inputs = create_input_dict_v1(schema.inputs)
    for hidden in schema.hidden:
        inputs.setdefault("hidden", {})[hidden.name] = (hidden.value,)
    outputs = list(schema.outputs)
    matchtypes = [template_id(o) for o in outputs]
    return NodeInfoV1(
        input=inputs,
        input_order={section: list(entries) for section, entries in inputs.items()},
        output=[o.get_io_type() for o in outputs],
        output_is_list=[bool(o.is_output_list) for o in outputs],
        output_name=[o.display_name or o.get_io_type() for o in outputs],
        output_tooltips=[o.tooltip or None for o in outputs],
        output_matchtypes=matchtypes if any(m is not None for m in matchtypes) else None,
        name=schema.node_id,
        display_name=schema.display_name,
        description=schema.description,
        python_module=python_module(cls),
        category=schema.category,
        output_node=schema.is_output_node,
        deprecated=schema.is_deprecated,
        experimental=schema.is_experimental,
        api_node=schema.is_api_node,
    )


def v3_info(schema: Any, cls: Any) -> NodeInfoV3:
    """``schema`` (finalized) in V3 form, for node class ``cls``."""
    inputs: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    for item in schema.inputs:
        add_to_dict_v3(item, inputs)
    for output in schema.outputs:
        add_to_dict_v3(output, outputs)
    return NodeInfoV3(
        input=inputs,
        output=outputs,
        hidden=[hidden.value for hidden in schema.hidden],
        name=schema.node_id,
        display_name=schema.display_name,
        description=schema.description,
        category=schema.category,
        output_node=schema.is_output_node,
        deprecated=schema.is_deprecated,
        experimental=schema.is_experimental,
        api_node=schema.is_api_node,
        python_module=python_module(cls),
    )


__all__ = [
    "NodeInfoV1",
    "NodeInfoV3",
    "V3Data",
    "add_to_dict_v1",
    "add_to_dict_v3",
    "create_input_dict_v1",
]
