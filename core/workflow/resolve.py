"""Follow an input socket upstream to the real node output (or constant) that feeds it.

Mirrors the frontend's ``ExecutableNodeDTO.resolveInput``/``resolveOutput`` as a loop:
legacy Reroutes pass through, bypassed nodes splice an input of matching type through,
subgraph instances lead to their inner origin, a definition's ``-10`` node leads back out
to the instance's input (or to the instance's widget value when that input is unlinked).
A visited set turns a loop in the wiring into a :class:`WorkflowConversionError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from loom.errors import WorkflowConversionError
from loom.workflow.graph import (
    INSTANCE,
    MODE_BYPASS,
    MODE_MUTED,
    PRIMITIVE,
    REAL,
    REROUTE,
    SUBGRAPH_IN,
    SUBGRAPH_OUTPUT_ID,
    BrokenLink,
    FlatNode,
)

log = logging.getLogger(__name__)

_ANY = ("*", "")


class Constant:
    """A resolved input that is a value (a subgraph instance's widget), not a link."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


Resolved = tuple[str, int] | Constant | None
InstanceValue = Callable[[FlatNode, int], Constant | None]


def compatible(a: str, b: str) -> bool:
    """LiteGraph's ``isValidConnection``: ``*`` matches anything; ``A,B`` unions intersect."""
    if a == b or a in _ANY or b in _ANY:
        return True
    a, b = a.lower(), b.lower()
    if a == b:
        return True
    if "," in a or "," in b:
        return not set(a.split(",")).isdisjoint(b.split(","))
    return False


def bypass_slot(node: FlatNode, slot: int, wanted: str) -> int:
    """The input a bypassed node passes through to output ``slot``, or -1 for none.

    Same slot index first when its type fits, else the first input of exactly the wanted
    type, else the first compatible input (frontend ``getBypassSlotIndex``).
    """
    inputs = node.inputs
    if not inputs:
        return -1
    if wanted in _ANY:
        return slot if slot < len(inputs) else 0
    out_type = node.outputs[slot] if 0 <= slot < len(node.outputs) else "*"
    if 0 <= slot < len(inputs):
        same = inputs[slot].type
        if compatible(same, out_type) and compatible(same, wanted):
            return slot
    for index, inp in enumerate(inputs):
        if inp.type == wanted:
            return index
    for index, inp in enumerate(inputs):
        if compatible(inp.type, out_type) and compatible(inp.type, wanted):
            return index
    return -1


class Resolver:
    """Resolves input sockets of one flattened graph.

    :param nodes: the flattened graph, by execution id.
    :param instance_value: gives the widget value of a subgraph instance input that has
        no link (or None when the instance has no such widget).
    """

    def __init__(self, nodes: dict[str, FlatNode], instance_value: InstanceValue) -> None:
        self.nodes = nodes
        self.instance_value = instance_value

    def resolve(self, node: FlatNode, index: int) -> Resolved:
        """``(origin exec id, slot)``, a :class:`Constant`, or None when nothing feeds it."""
        nodes = self.nodes
        visited: set[tuple[str, int, bool]] = set()
        current, slot, wanted = node, index, ""
        while True:
            self._visit(visited, (current.id, slot, True), node, index)
            if not 0 <= slot < len(current.inputs):
                return None
            socket = current.inputs[slot]
            wanted = wanted or socket.type
            link = socket.link
            if link is None:
                return None
            if isinstance(link, BrokenLink):
                raise self._error(
                    current,
                    socket.name,
                    node,
                    index,
                    f"uses link {link.link_id}, which is not in the workflow's links",
                )
            origin_id, origin_slot = link
            source = nodes.get(origin_id)
            if source is None:
                raise self._error(
                    current,
                    socket.name,
                    node,
                    index,
                    f"is linked from node {origin_id}, which is not in the workflow",
                )
            self._visit(visited, (origin_id, origin_slot, False), node, index)
            if source.mode == MODE_BYPASS:
                slot = bypass_slot(source, origin_slot, wanted)
                if slot < 0:
                    log.debug("bypassed %s has no input of type %s", source.describe(), wanted)
                    return None
                current, wanted = source, ""
                continue
            kind = source.kind
            if kind == REAL:
                return None if source.mode == MODE_MUTED else (origin_id, origin_slot)
            if kind == INSTANCE:
                if source.mode == MODE_MUTED:
                    return None
                current, slot = nodes[f"{origin_id}:{SUBGRAPH_OUTPUT_ID}"], origin_slot
                continue
            if kind == SUBGRAPH_IN:
                instance = nodes[source.instance or ""]
                if (
                    0 <= origin_slot < len(instance.inputs)
                    and instance.inputs[origin_slot].link is not None
                ):
                    current, slot, wanted = instance, origin_slot, ""
                    continue
                return self.instance_value(instance, origin_slot)
            if kind == REROUTE and source.inputs:
                current, slot = source, 0
                continue
            if kind == PRIMITIVE and current.kind == INSTANCE:
                # The primitive's value was copied into the instance's widget.
                return self.instance_value(current, slot)
            return None  # PrimitiveNode (value applied to the widget), notes, dead ends

    def _visit(
        self,
        visited: set[tuple[str, int, bool]],
        key: tuple[str, int, bool],
        node: FlatNode,
        index: int,
    ) -> None:
        if key in visited:
            raise self._error(
                node,
                node.inputs[index].name,
                node,
                index,
                f"is wired in a loop through node {key[0]}",
            )
        visited.add(key)

    @staticmethod
    def _error(
        where: FlatNode, input_name: str, node: FlatNode, index: int, problem: str
    ) -> WorkflowConversionError:
        message = f"{where.describe()}: input {input_name!r} {problem}"
        if where is not node:
            message += f" (resolving input {node.inputs[index].name!r} of {node.describe()})"
        return WorkflowConversionError(message)
