"""``comfy_execution.graph_utils``: build the API-format subgraph a node expands into.

``GraphBuilder().node("ImageInvert", image=img)`` adds a node and returns a handle whose
``out(i)`` is a link ``[id, i]``; ``finalize()`` is the ``expand`` dict. Ids are prefixed
per builder so two expansions never collide (the executor refuses reused ids).
"""

from __future__ import annotations

import itertools
from typing import Any

_counter = itertools.count(1)


def is_link(value: Any) -> bool:
    """Whether ``value`` is an ``[node_id, output_index]`` link."""
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


class Node:
    """One node of a :class:`GraphBuilder`."""

    def __init__(self, node_id: str, class_type: str, inputs: dict[str, Any]) -> None:
        self.id = node_id
        self.class_type = class_type
        self.inputs = dict(inputs)
        self.override_display_id: str | None = None

    def out(self, index: int) -> list[Any]:
        return [self.id, index]

    def set_input(self, key: str, value: Any) -> None:
        if value is None:
            self.inputs.pop(key, None)
        else:
            self.inputs[key] = value

    def get_input(self, key: str) -> Any:
        return self.inputs.get(key)

    def set_override_display_id(self, override_display_id: str) -> None:
        self.override_display_id = override_display_id

    def serialize(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"class_type": self.class_type, "inputs": dict(self.inputs)}
        if self.override_display_id is not None:
            entry["override_display_id"] = self.override_display_id
        return entry


class GraphBuilder:
    """Collects nodes for an expansion; ``prefix`` defaults to a fresh one per builder."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix if prefix is not None else f"loom.expand.{next(_counter)}."
        self.nodes: dict[str, Node] = {}
        self._ids = itertools.count(1)

    @classmethod
    def set_default_prefix(cls, prefix_root: str, call_index: int, graph_index: int = 0) -> None:
        """Accepted for compatibility; Loom's prefixes are already unique per builder."""

    def node(self, class_type: str, id: str | None = None, **inputs: Any) -> Node:
        node_id = self.prefix + (str(id) if id is not None else str(next(self._ids)))
        existing = self.nodes.get(node_id)
        if existing is not None:
            for key, value in inputs.items():
                existing.set_input(key, value)
            return existing
        node = self.nodes[node_id] = Node(node_id, class_type, inputs)
        return node

    def lookup_node(self, id: str) -> Node | None:
        return self.nodes.get(self.prefix + str(id))

    def remove_node(self, id: str) -> None:
        self.nodes.pop(self.prefix + str(id), None)

    def finalize(self) -> dict[str, dict[str, Any]]:
        return {node_id: node.serialize() for node_id, node in self.nodes.items()}


__all__ = ["GraphBuilder", "Node", "is_link"]
