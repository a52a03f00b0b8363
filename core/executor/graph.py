"""API prompts as graphs: link detection, upstream edges, topological order.

Nothing here recurses over the graph: deep chains (10,000+ nodes) are ordinary input.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

Prompt = dict[str, dict[str, Any]]


def is_link(value: Any) -> bool:
    """ComfyUI's rule: a 2-item list ``[node_id, output_index]`` is a link."""
    if type(value) is not list or len(value) != 2:
        return False
    source, slot = value
    return (type(source) is str or type(source) is int) and type(slot) is int


def link_source(value: list[Any]) -> tuple[str, int]:
    return str(value[0]), value[1]


def upstream_ids(node: Mapping[str, Any]) -> list[str]:
    """Ids of the nodes a node's inputs link to (duplicates removed, order kept)."""
    inputs = node.get("inputs")
    if not isinstance(inputs, dict):
        return []
    seen: dict[str, None] = {}
    for value in inputs.values():
        if is_link(value):
            seen.setdefault(str(value[0]), None)
    return list(seen)


def reachable(
    prompt: Mapping[str, Any], roots: Iterable[str], known: Mapping[str, Any] | None = None
) -> list[str]:
    """Every node reachable upstream from ``roots`` (roots included), in discovery order.

    Nodes in ``known`` (an upstream-closed set already walked) are neither returned nor
    walked through, so walking from many roots in turn stays linear overall.
    """
    known = known or {}
    seen: dict[str, None] = {}
    stack = [root for root in roots if root in prompt]
    while stack:
        node_id = stack.pop()
        if node_id in seen or node_id in known:
            continue
        seen[node_id] = None
        for source in upstream_ids(prompt[node_id]):
            if source in prompt and source not in seen and source not in known:
                stack.append(source)
    return list(seen)


def topological_order(
    prompt: Mapping[str, Any], nodes: Iterable[str]
) -> tuple[list[str], list[str]]:
    """Order ``nodes`` upstream-first (Kahn). Returns ``(ordered, cyclic)``.

    ``cyclic`` holds the nodes that sit on a dependency cycle (or between cycles); nodes
    that only depend on a cycle are in neither list.
    """
    members = set(nodes)
    indegree: dict[str, int] = {}
    downstream: dict[str, list[str]] = {n: [] for n in members}
    sources_of: dict[str, list[str]] = {}
    for node_id in members:
        sources = sources_of[node_id] = [s for s in upstream_ids(prompt[node_id]) if s in members]
        indegree[node_id] = len(sources)
        for source in sources:
            downstream[source].append(node_id)
    ready = deque(sorted((n for n, d in indegree.items() if d == 0), key=id_sort_key))
    ordered: list[str] = []
    while ready:
        node_id = ready.popleft()
        ordered.append(node_id)
        for consumer in downstream[node_id]:
            indegree[consumer] -= 1
            if indegree[consumer] == 0:
                ready.append(consumer)
    if len(ordered) == len(members):
        return ordered, []
    # Peel off nodes downstream of cycles: what is left has an outgoing edge inside the rest.
    rest = members.difference(ordered)
    outdegree = {n: sum(1 for c in downstream[n] if c in rest) for n in rest}
    sinks = deque(n for n, d in outdegree.items() if d == 0)
    while sinks:
        node_id = sinks.popleft()
        rest.discard(node_id)
        for source in sources_of[node_id]:
            if source in rest:
                outdegree[source] -= 1
                if outdegree[source] == 0:
                    sinks.append(source)
    return ordered, sorted(rest, key=id_sort_key)


def id_sort_key(node_id: str) -> tuple[int, int | str]:
    """Numeric ids in number order, then the others (``"10.0.0.1"``) by name."""
    return (0, int(node_id)) if node_id.isdigit() else (1, node_id)
