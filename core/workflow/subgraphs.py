"""Flatten a UI workflow, subgraphs included, into one table of :class:`FlatNode`.

A node whose ``type`` is the id of a ``definitions.subgraphs[]`` entry is an instance: its
definition's nodes are added with ids ``"<instance id>:<inner id>"`` (nested instances
nest the prefix). Inside a definition, links from node ``-10`` come from the instance's
input slots and links to node ``-20`` feed the instance's output slots; both pseudo-nodes
are added as ``"<instance id>:-10"`` / ``"<instance id>:-20"`` so that resolution can walk
through them like any other node. Work is a loop over a stack of scopes, never recursion.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from loom.errors import WorkflowConversionError
from loom.workflow.graph import (
    INSTANCE,
    MODE_ALWAYS,
    REAL,
    RENAMED_TYPES,
    SUBGRAPH_IN,
    SUBGRAPH_INPUT_ID,
    SUBGRAPH_OUT,
    SUBGRAPH_OUTPUT_ID,
    VIRTUAL_TYPES,
    BrokenLink,
    FlatInput,
    FlatNode,
    as_mode,
    iter_links,
    link_key,
    require_list,
)

log = logging.getLogger(__name__)

Target = tuple[str, int]


class FlatGraph:
    """Every node of a workflow by execution id, in workflow order, plus outgoing links."""

    def __init__(self) -> None:
        self.nodes: dict[str, FlatNode] = {}

    def outgoing(self) -> dict[str, list[Target]]:
        """``origin exec id -> [(target exec id, target slot), ...]``, built on demand."""
        result: dict[str, list[Target]] = {}
        for node in self.nodes.values():
            for slot, socket in enumerate(node.inputs):
                link = socket.link
                if isinstance(link, tuple):
                    result.setdefault(link[0], []).append((node.id, slot))
        return result


class _Scope:
    __slots__ = ("chain", "instance", "links", "mode", "nodes", "prefix")

    def __init__(
        self,
        prefix: str,
        nodes: Any,
        links: Any,
        instance: str | None,
        mode: int,
        chain: tuple[str, ...],
    ) -> None:
        self.prefix = prefix
        self.nodes = nodes
        self.links = links
        self.instance = instance
        self.mode = mode
        self.chain = chain


def collect_definitions(workflow: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """All subgraph definitions by id: the top-level ones and any nested ``definitions``."""
    found: dict[str, Mapping[str, Any]] = {}
    pending: list[Mapping[str, Any]] = [workflow]
    while pending:
        holder = pending.pop()
        definitions = holder.get("definitions")
        subgraphs = definitions.get("subgraphs") if isinstance(definitions, dict) else None
        for definition in subgraphs or ():
            if not isinstance(definition, dict) or "id" not in definition:
                continue
            key = str(definition["id"])
            if key not in found:
                found[key] = definition
                pending.append(definition)
    return found


def flatten(workflow: Mapping[str, Any]) -> FlatGraph:
    """Expand subgraph instances and wire every input socket to its upstream exec id."""
    definitions = collect_definitions(workflow)
    graph = FlatGraph()
    root = _Scope(
        "",
        require_list(workflow.get("nodes"), "workflow 'nodes'"),
        workflow.get("links") or [],
        None,
        MODE_ALWAYS,
        (),
    )
    stack = [root]
    while stack:
        scope = stack.pop()
        links = _link_table(scope)
        children = [
            child
            for node in scope.nodes
            if isinstance(node, dict)
            for child in _add_node(graph, scope, node, links, definitions)
        ]
        if scope.instance is not None:
            _wire_subgraph_outputs(graph, scope, links)
        # Reversed so that the first instance's inner nodes come out first.
        stack.extend(reversed(children))
    return graph


def _link_table(scope: _Scope) -> dict[Any, tuple[Any, int, Any, int]]:
    return {
        link_key(link_id): (origin, origin_slot, target, target_slot)
        for link_id, origin, origin_slot, target, target_slot in iter_links(scope.links)
    }


def _add_node(
    graph: FlatGraph,
    scope: _Scope,
    node: Mapping[str, Any],
    links: dict[Any, tuple[Any, int, Any, int]],
    definitions: dict[str, Mapping[str, Any]],
) -> list[_Scope]:
    """Add one UI node; return the child scope to expand when it is a subgraph instance."""
    prefix = scope.prefix
    exec_id = prefix + str(node.get("id"))
    type_ = str(node.get("type") or "")
    type_ = RENAMED_TYPES.get(type_, type_)
    mode = as_mode(node.get("mode"))
    if scope.mode != MODE_ALWAYS:  # a muted/bypassed instance takes its contents with it
        mode = scope.mode
    definition = definitions.get(type_)
    kind = INSTANCE if definition is not None else VIRTUAL_TYPES.get(type_, REAL)
    if exec_id in graph.nodes:
        raise WorkflowConversionError(f"node id {exec_id} ({type_}) appears twice in the workflow")
    flat = FlatNode(exec_id, kind, type_, mode)
    flat.instance = scope.instance
    title = node.get("title")
    flat.title = title if isinstance(title, str) and title else None
    flat.widgets_values = node.get("widgets_values")
    properties = node.get("properties")
    flat.properties = properties if isinstance(properties, dict) else {}
    flat.outputs = [
        str(out.get("type", "*")) for out in node.get("outputs") or () if isinstance(out, dict)
    ]
    flat.inputs = [
        _input(inp, prefix, links) for inp in node.get("inputs") or () if isinstance(inp, dict)
    ]
    graph.nodes[exec_id] = flat
    if definition is None:
        return []
    return [_instance_scope(graph, scope, flat, definition)]


def _input(
    inp: Mapping[str, Any], prefix: str, links: dict[Any, tuple[Any, int, Any, int]]
) -> FlatInput:
    widget = inp.get("widget")
    widget_name = widget.get("name") if isinstance(widget, dict) else None
    link_id = inp.get("link")
    link: tuple[str, int] | BrokenLink | None = None
    if link_id is not None:
        entry = links.get(link_key(link_id))
        link = BrokenLink(link_id) if entry is None else (prefix + str(entry[0]), entry[1])
    return FlatInput(str(inp.get("name", "")), str(inp.get("type", "*")), widget_name, link)


def _instance_scope(
    graph: FlatGraph, scope: _Scope, instance: FlatNode, definition: Mapping[str, Any]
) -> _Scope:
    """Add the IO pseudo-nodes of one instance and describe its definition's contents."""
    if instance.type in scope.chain:
        raise WorkflowConversionError(
            f"{instance.describe()}: subgraph {instance.type!r} contains itself"
        )
    inner_prefix = instance.id + ":"
    def_inputs = [x for x in definition.get("inputs") or () if isinstance(x, dict)]
    def_outputs = [x for x in definition.get("outputs") or () if isinstance(x, dict)]
    if not instance.outputs:
        instance.outputs = [str(out.get("type", "*")) for out in def_outputs]
    source = FlatNode(
        inner_prefix + str(SUBGRAPH_INPUT_ID), SUBGRAPH_IN, "SubgraphInput", MODE_ALWAYS
    )
    source.instance = instance.id
    source.outputs = [str(x.get("type", "*")) for x in def_inputs]
    source.inputs = [
        FlatInput(str(x.get("name", "")), str(x.get("type", "*")), None, None) for x in def_inputs
    ]
    sink = FlatNode(
        inner_prefix + str(SUBGRAPH_OUTPUT_ID), SUBGRAPH_OUT, "SubgraphOutput", MODE_ALWAYS
    )
    sink.instance = instance.id
    sink.inputs = [
        FlatInput(str(x.get("name", "")), str(x.get("type", "*")), None, None) for x in def_outputs
    ]
    graph.nodes[source.id] = source
    graph.nodes[sink.id] = sink
    nodes = definition.get("nodes")
    return _Scope(
        inner_prefix,
        nodes if isinstance(nodes, list) else [],
        definition.get("links") or [],
        instance.id,
        instance.mode,
        (*scope.chain, instance.type),
    )


def _wire_subgraph_outputs(
    graph: FlatGraph, scope: _Scope, links: dict[Any, tuple[Any, int, Any, int]]
) -> None:
    sink = graph.nodes[scope.prefix + str(SUBGRAPH_OUTPUT_ID)]
    for origin, origin_slot, target, target_slot in links.values():
        if _is_id(target, SUBGRAPH_OUTPUT_ID) and 0 <= target_slot:
            while len(sink.inputs) <= target_slot:
                sink.inputs.append(FlatInput("", "*", None, None))
            sink.inputs[target_slot].link = (scope.prefix + str(origin), origin_slot)


def _is_id(value: Any, wanted: int) -> bool:
    return value == wanted or value == str(wanted)
