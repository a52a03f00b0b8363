"""UI workflow (what the ComfyUI frontend saves) → API prompt, without a browser.

Follows the frontend's ``graphToPrompt`` (comfy-compat.md 7.5): flatten subgraphs, apply
PrimitiveNode and promoted-widget values, drop virtual/muted/bypassed nodes, write each
remaining node's widget values in widget order, then its resolved links.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from loom.errors import WorkflowConversionError
from loom.executor.validate import unknown_node_types_error
from loom.registry import Registry
from loom.workflow.graph import (
    INSTANCE,
    MODE_ALWAYS,
    PRIMITIVE,
    REAL,
    REROUTE,
    SUBGRAPH_INPUT_ID,
    FlatNode,
)
from loom.workflow.resolve import Constant, Resolver
from loom.workflow.subgraphs import FlatGraph, flatten
from loom.workflow.widgets import LayoutCache

log = logging.getLogger(__name__)

Overrides = dict[str, dict[str, Any]]


def is_ui_workflow(data: object) -> bool:
    """True for a UI workflow (``nodes`` list and ``links``), False for an API prompt."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def _custom_node_packs(nodes: list[FlatNode]) -> dict[str, str]:
    """class_type -> the custom node pack ComfyUI recorded for it (``cnr_id``, the registry id,
    or ``aux_id``, the repository), for the hint on a type no plugin registered."""
    packs = {}
    for node in nodes:
        pack = node.properties.get("cnr_id") or node.properties.get("aux_id")
        if isinstance(pack, str) and pack and pack != "comfy-core":
            packs[str(node.type)] = pack
    return packs


def convert_workflow(workflow: dict, registry: Registry) -> dict:
    """Convert a UI-format workflow into an API prompt.

    :param workflow: the workflow JSON (version 0.4 or 1, subgraphs allowed).
    :param registry: node types, for each node's widget order and display name.
    :returns: ``{node_id: {"inputs": {...}, "class_type": str, "_meta": {"title": str}}}``.
    :raises PromptValidationError: node types no plugin registered (all of them at once,
        worded as for an API prompt).
    :raises WorkflowConversionError: broken link, or looping wiring; the message names the
        node id and type (and the input).
    """
    if not is_ui_workflow(workflow):
        raise WorkflowConversionError("not a UI workflow: expected 'nodes' (a list) and 'links'")
    started = time.perf_counter()
    graph = flatten(workflow)
    overrides: Overrides = {}
    _apply_promoted_widgets(graph, overrides)
    _apply_primitives(graph, overrides)
    instance_widgets = _InstanceWidgets(graph, overrides)
    resolver = Resolver(graph.nodes, instance_widgets.value)
    running = [n for n in graph.nodes.values() if n.kind == REAL and n.mode == MODE_ALWAYS]
    unknown = unknown_node_types_error(
        {node.id: node.type for node in running}, registry, _custom_node_packs(running)
    )
    if unknown is not None:
        raise unknown
    layouts = LayoutCache(registry)
    prompt: dict[str, dict[str, Any]] = {}
    for node in graph.nodes.values():
        if node.kind == REAL and node.mode == MODE_ALWAYS:
            prompt[node.id] = _convert_node(node, registry, layouts, resolver, overrides)
    _drop_dangling_links(prompt)
    log.debug(
        "converted workflow: %d UI nodes -> %d API nodes in %.1f ms",
        len(graph.nodes),
        len(prompt),
        (time.perf_counter() - started) * 1000,
    )
    return prompt


def _wrap(value: Any) -> Any:
    """Lists mean links in the API format; a list-valued constant is boxed."""
    return {"__value__": value} if isinstance(value, list) else value


def _convert_node(
    node: FlatNode,
    registry: Registry,
    layouts: LayoutCache,
    resolver: Resolver,
    overrides: Overrides,
) -> dict[str, Any]:
    definition = registry.get_node(node.type)
    if definition is None:
        raise WorkflowConversionError(
            f"node {node.id} ({node.type}): unknown node type {node.type!r}",
            hint="install the plugin or custom node pack that provides it",
        )
    try:
        layout = layouts.get(definition)
    except Exception as exc:  # a node pack's INPUT_TYPES bug, reported against the node
        raise WorkflowConversionError(
            f"node {node.id} ({node.type}): reading its inputs failed: {type(exc).__name__}: {exc}"
        ) from exc
    linked = {socket.name for socket in node.inputs if socket.link is not None}
    values = layout.values(node.widgets_values, linked)
    for name, value in overrides.get(node.id, {}).items():
        if name in layout.names:
            values[name] = value
    inputs: dict[str, Any] = {name: _wrap(value) for name, value in values.items()}
    for index, socket in enumerate(node.inputs):
        if socket.link is None:
            continue
        resolved = resolver.resolve(node, index)
        if isinstance(resolved, Constant):
            inputs[socket.name] = _wrap(resolved.value)
        elif resolved is not None:
            inputs[socket.name] = [resolved[0], resolved[1]]
    title = node.title or definition.display_name or definition.class_type
    return {"inputs": inputs, "class_type": definition.class_type, "_meta": {"title": title}}


def _drop_dangling_links(prompt: dict[str, dict[str, Any]]) -> None:
    """Step 5: remove inputs linking to nodes that are not in the prompt."""
    for entry in prompt.values():
        inputs = entry["inputs"]
        dangling = [
            name
            for name, value in inputs.items()
            if isinstance(value, list) and len(value) == 2 and value[0] not in prompt
        ]
        for name in dangling:
            del inputs[name]


def _widget_name(node: FlatNode, slot: int) -> str | None:
    if not 0 <= slot < len(node.inputs):
        return None
    socket = node.inputs[slot]
    return socket.widget or socket.name


def _apply_primitives(graph: FlatGraph, overrides: Overrides) -> None:
    """Copy each PrimitiveNode's value into every widget it feeds (through Reroutes too)."""
    nodes = graph.nodes
    primitives = [node for node in nodes.values() if node.kind == PRIMITIVE]
    outgoing = graph.outgoing() if primitives else {}
    for primitive in primitives:
        saved = primitive.widgets_values
        if isinstance(saved, dict):
            saved = list(saved.values())
        if not isinstance(saved, list) or not saved:
            continue
        pending = list(outgoing.get(primitive.id, ()))
        seen: set[str] = {primitive.id}
        while pending:
            target_id, slot = pending.pop()
            target = nodes.get(target_id)
            if target is None:
                continue
            if target.kind == REROUTE:
                if target_id not in seen:
                    seen.add(target_id)
                    pending.extend(outgoing.get(target_id, ()))
                continue
            name = _widget_name(target, slot)
            if name:
                overrides.setdefault(target_id, {})[name] = saved[0]


def _apply_promoted_widgets(graph: FlatGraph, overrides: Overrides) -> None:
    """Instance ``properties.proxyWidgets`` values override the inner widgets they show."""
    for instance in graph.nodes.values():
        if instance.kind != INSTANCE:
            continue
        proxies = instance.properties.get("proxyWidgets")
        saved = instance.widgets_values
        if not isinstance(proxies, list) or not isinstance(saved, (list, dict)):
            continue
        for index, proxy in enumerate(proxies):
            if not isinstance(proxy, (list, tuple)) or len(proxy) < 2:
                continue
            inner_id, name = str(proxy[0]), str(proxy[1])
            if isinstance(saved, dict):
                if name not in saved:
                    continue
                value = saved[name]
            elif index < len(saved):
                value = saved[index]
            else:
                continue
            if value is None:  # nothing saved (a promoted text box): the inner value stands
                continue
            if inner_id == "-1":  # a widget of the instance's own subgraph input
                overrides.setdefault(instance.id, {}).setdefault(name, value)
            else:
                overrides.setdefault(f"{instance.id}:{inner_id}", {})[name] = value


class _InstanceWidgets:
    """Widget values of subgraph instances, for inner inputs fed by an unlinked instance input."""

    def __init__(self, graph: FlatGraph, overrides: Overrides) -> None:
        self.graph = graph
        self.overrides = overrides
        self._cache: dict[str, dict[str, Any]] = {}

    def value(self, instance: FlatNode, slot: int) -> Constant | None:
        """The instance's widget value for input ``slot``, or None when it has none."""
        widgets = self._cache.get(instance.id)
        if widgets is None:
            widgets = self._cache[instance.id] = self._widgets(instance)
        name = _widget_name(instance, slot)
        if name is None:
            source = self.graph.nodes.get(f"{instance.id}:{SUBGRAPH_INPUT_ID}")
            name = _widget_name(source, slot) if source is not None else None
        if name is None or name not in widgets:
            return None
        return Constant(widgets[name])

    def _widgets(self, instance: FlatNode) -> dict[str, Any]:
        saved = instance.widgets_values
        widgets: dict[str, Any] = {}
        if isinstance(saved, dict):
            widgets.update(saved)
        elif isinstance(saved, list) and not isinstance(
            instance.properties.get("proxyWidgets"), list
        ):
            names = [socket.widget for socket in instance.inputs if socket.widget]
            widgets.update(zip(names, saved, strict=False))
        widgets.update(self.overrides.get(instance.id, {}))
        return widgets
