"""Build UI-format workflows in tests without spelling out every JSON field."""

from __future__ import annotations

from typing import Any


def socket(name: str, type_: str, widget: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "type": type_, "link": None}
    if widget:
        entry["widget"] = {"name": name}
    return entry


class UIGraph:
    """A UI workflow under construction; ``link()`` keeps node sockets and links in step."""

    def __init__(self) -> None:
        self.nodes: dict[Any, dict[str, Any]] = {}
        self.links: list[list[Any]] = []
        self.extra: dict[str, Any] = {}
        self.definitions: list[dict[str, Any]] = []

    def node(
        self,
        node_id: Any,
        type_: str,
        *,
        inputs: list[dict] | None = None,
        outputs: list[str] | None = None,
        widgets: Any = None,
        mode: int = 0,
        title: str | None = None,
        properties: dict | None = None,
    ) -> dict[str, Any]:
        node: dict[str, Any] = {
            "id": node_id,
            "type": type_,
            "pos": [0, 0],
            "size": [200, 100],
            "flags": {},
            "order": len(self.nodes),
            "mode": mode,
            "inputs": list(inputs or []),
            "outputs": [{"name": t, "type": t, "links": []} for t in outputs or []],
            "properties": dict(properties or {}),
        }
        if widgets is not None:
            node["widgets_values"] = widgets
        if title is not None:
            node["title"] = title
        self.nodes[node_id] = node
        return node

    def link(
        self, origin: Any, origin_slot: int, target: Any, target_slot: int, type_: str = "*"
    ) -> int:
        link_id = len(self.links) + 1
        self.links.append([link_id, origin, origin_slot, target, target_slot, type_])
        self.nodes[target]["inputs"][target_slot]["link"] = link_id
        outputs = self.nodes[origin]["outputs"]
        if origin_slot < len(outputs):
            outputs[origin_slot]["links"].append(link_id)
        return link_id

    def to_json(self, schema: str = "array") -> dict[str, Any]:
        links: list[Any] = self.links
        if schema == "object":
            links = [
                dict(
                    zip(
                        ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type"),
                        link,
                        strict=True,
                    )
                )
                for link in self.links
            ]
        data: dict[str, Any] = {
            "id": "test",
            "revision": 0,
            "nodes": list(self.nodes.values()),
            "links": links,
            "groups": [],
            "config": {},
            "extra": dict(self.extra),
            "version": 1 if schema == "object" else 0.4,
        }
        if self.definitions:
            data["definitions"] = {"subgraphs": self.definitions}
        return data


def to_object_links(workflow: dict[str, Any]) -> dict[str, Any]:
    """The same workflow in the version-1 schema (links as objects)."""
    keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    converted = dict(workflow)
    converted["links"] = [dict(zip(keys, link, strict=True)) for link in workflow["links"]]
    converted["version"] = 1
    return converted


def empty_image(g: UIGraph, node_id: Any, widgets: Any = (64, 64, 1, 0), **kw: Any) -> dict:
    names = ("width", "height", "batch_size", "color")
    return g.node(
        node_id,
        "EmptyImage",
        inputs=[socket(n, "INT", True) for n in names],
        outputs=["IMAGE"],
        widgets=list(widgets) if isinstance(widgets, tuple) else widgets,
        **kw,
    )


def invert(g: UIGraph, node_id: Any, **kw: Any) -> dict:
    return g.node(
        node_id,
        "ImageInvert",
        inputs=[socket("image", "IMAGE")],
        outputs=["IMAGE"],
        widgets=[],
        **kw,
    )


def preview(g: UIGraph, node_id: Any, **kw: Any) -> dict:
    return g.node(node_id, "PreviewImage", inputs=[socket("images", "IMAGE")], widgets=[], **kw)


def save(g: UIGraph, node_id: Any, prefix: str = "out", **kw: Any) -> dict:
    return g.node(
        node_id,
        "SaveImage",
        inputs=[socket("images", "IMAGE"), socket("filename_prefix", "STRING", True)],
        widgets=[prefix],
        **kw,
    )


def reroute(g: UIGraph, node_id: Any, **kw: Any) -> dict:
    return g.node(node_id, "Reroute", inputs=[socket("", "*")], outputs=["*"], **kw)


def chain(length: int, *, mode: int = 0) -> dict[str, Any]:
    """EmptyImage(1) -> ImageInvert x length -> PreviewImage; inverts get ``mode``."""
    g = UIGraph()
    empty_image(g, 1)
    previous = 1
    for node_id in range(2, length + 2):
        invert(g, node_id, mode=mode)
        g.link(previous, 0, node_id, 0, "IMAGE")
        previous = node_id
    preview(g, length + 2)
    g.link(previous, 0, length + 2, 0, "IMAGE")
    return g.to_json()
