"""The flattened graph a UI workflow becomes before conversion.

Subgraph instances are expanded (see :mod:`loom.workflow.subgraphs`) into one table of
:class:`FlatNode` keyed by execution id (``"3"``, ``"10:2"``, ``"10:5:1"``). Every input
socket already knows its upstream ``(execution id, output slot)``, so resolving a source
is a walk over dicts, never a lookup in per-scope link tables.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from loom.errors import WorkflowConversionError

log = logging.getLogger(__name__)

MODE_ALWAYS = 0
MODE_MUTED = 2
MODE_BYPASS = 4

# Node kinds.
REAL = "real"
REROUTE = "reroute"
PRIMITIVE = "primitive"
NOTE = "note"
INSTANCE = "instance"
SUBGRAPH_IN = "subgraph_in"
SUBGRAPH_OUT = "subgraph_out"

#: UI-only node types that never reach the API prompt (7.4), by kind.
VIRTUAL_TYPES = {
    "Reroute": REROUTE,
    "PrimitiveNode": PRIMITIVE,
    "Note": NOTE,
    "MarkdownNote": NOTE,
}

#: Node types the frontend renames when it loads a saved workflow (ComfyUI renamed or merged
#: them; frontend 1.35.9, ComfyUI 0.8's pin), so old workflows keep running.
RENAMED_TYPES = {
    "T2IAdapterLoader": "ControlNetLoader",
    "ConditioningAverage ": "ConditioningAverage",
    "SDV_img2vid_Conditioning": "SVD_img2vid_Conditioning",
    "Load3DAnimation": "Load3D",
    "Preview3DAnimation": "Preview3D",
}

SUBGRAPH_INPUT_ID = -10
SUBGRAPH_OUTPUT_ID = -20


class BrokenLink:
    """An input whose link id is absent from its graph's link table."""

    __slots__ = ("link_id",)

    def __init__(self, link_id: Any) -> None:
        self.link_id = link_id


class FlatInput:
    """One input socket: its name, type, widget name, and upstream ``(exec id, slot)``."""

    __slots__ = ("link", "name", "type", "widget")

    def __init__(
        self, name: str, type_: str, widget: str | None, link: tuple[str, int] | BrokenLink | None
    ) -> None:
        self.name = name
        self.type = type_
        self.widget = widget
        self.link = link


class FlatNode:
    """A node of the flattened graph (real, virtual, subgraph instance or IO pseudo-node)."""

    __slots__ = (
        "id",
        "inputs",
        "instance",
        "kind",
        "mode",
        "outputs",
        "properties",
        "title",
        "type",
        "widgets_values",
    )

    def __init__(self, exec_id: str, kind: str, type_: str, mode: int) -> None:
        self.id = exec_id
        self.kind = kind
        self.type = type_
        self.mode = mode
        self.title: str | None = None
        self.inputs: list[FlatInput] = []
        self.outputs: list[str] = []
        self.widgets_values: Any = None
        self.properties: Mapping[str, Any] = {}
        #: For subgraph IO pseudo-nodes and inner nodes: the owning instance's exec id.
        self.instance: str | None = None

    def describe(self) -> str:
        """``node 3 (KSampler)`` for error messages."""
        return f"node {self.id} ({self.type})"


def as_mode(value: Any) -> int:
    """A node ``mode``; on-event/on-trigger (1, 3) and junk count as always (0)."""
    return value if value in (MODE_MUTED, MODE_BYPASS) else MODE_ALWAYS


def iter_links(links: Any) -> Iterator[tuple[Any, Any, int, Any, int]]:
    """Yield ``(id, origin_id, origin_slot, target_id, target_slot)`` from either link schema.

    Accepts the 0.4 array form ``[id, origin_id, origin_slot, target_id, target_slot, type]``
    and the version-1 object form ``{"id", "origin_id", ...}``; malformed entries are skipped.
    """
    if isinstance(links, dict):
        links = links.values()
    if not isinstance(links, (list, tuple)) and not hasattr(links, "__iter__"):
        return
    for link in links:
        if isinstance(link, dict):
            fields = (
                link.get("id"),
                link.get("origin_id"),
                link.get("origin_slot"),
                link.get("target_id"),
                link.get("target_slot"),
            )
        elif isinstance(link, (list, tuple)) and len(link) >= 5:
            fields = (link[0], link[1], link[2], link[3], link[4])
        else:
            log.debug("skipping malformed link %r", link)
            continue
        if fields[0] is None:
            continue
        yield fields[0], fields[1], _slot(fields[2]), fields[3], _slot(fields[4])


def _slot(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def link_key(link_id: Any) -> Any:
    """Link ids may be saved as ints or numeric strings; compare them as ints when possible."""
    if isinstance(link_id, str):
        try:
            return int(link_id)
        except ValueError:
            return link_id
    return link_id


def require_list(value: Any, what: str) -> list[Any]:
    """``value`` when it is a list, else a :class:`WorkflowConversionError` naming ``what``."""
    if not isinstance(value, list):
        raise WorkflowConversionError(f"{what} must be a list, got {type(value).__name__}")
    return value
