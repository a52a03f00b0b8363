"""UI workflow -> API prompt conversion time for chains of 100 / 1,000 / 10,000 nodes.

Two shapes, both saved the way frontend 1.35.9 saves them (a socket for every widget):
``plain``, a chain of nodes with an IMAGE socket and four widgets (seed with its control
slot, a FLOAT, a combo, a STRING); ``mixed``, the same chain where every fifth node is a
legacy Reroute, every seventh is bypassed, and a PrimitiveNode feeds every seed.
Target (issue: headless conversion): a 1,000-node workflow in < 100 ms.

Run: ``python bench/bench_workflow_convert.py`` (``nox -s bench`` runs every bench script).
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from loom.registry import Registry
from loom.workflow import convert_workflow


class Source:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": ("INT", {"default": 512, "min": 1, "max": 16384})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    def run(self, width):
        return (width,)


class Filter:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE",),
                "seed": (
                    "INT",
                    {"default": 0, "min": 0, "max": 2**64 - 1, "control_after_generate": True},
                ),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.01}),
                "mode": (["add", "multiply", "screen"],),
                "label": ("STRING", {"default": ""}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    def run(self, **kwargs):
        return (kwargs["image"],)


FILTER_WIDGETS = [("seed", "INT"), ("strength", "FLOAT"), ("mode", "COMBO"), ("label", "STRING")]


def _node(
    node_id: int,
    type_: str,
    inputs: list[dict],
    outputs: list[str],
    widgets: list[Any],
    mode: int = 0,
) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": type_,
        "pos": [node_id * 10, 0],
        "size": [200, 100],
        "flags": {},
        "order": node_id,
        "mode": mode,
        "inputs": inputs,
        "outputs": [{"name": t, "type": t, "links": []} for t in outputs],
        "properties": {},
        "widgets_values": widgets,
    }


def build_chain(length: int, mixed: bool) -> dict[str, Any]:
    """A UI workflow: Source(1) -> ``length`` nodes -> end, links in the 0.4 array schema."""
    nodes = [
        _node(
            1,
            "Source",
            [{"name": "width", "type": "INT", "widget": {"name": "width"}, "link": None}],
            ["IMAGE"],
            [512],
        )
    ]
    links: list[list[Any]] = []

    def link(origin: int, target: dict[str, Any], slot: int, type_: str) -> None:
        links.append([len(links) + 1, origin, 0, target["id"], slot, type_])
        target["inputs"][slot]["link"] = len(links)

    primitive = None
    if mixed:
        primitive = _node(length + 2, "PrimitiveNode", [], ["INT"], [42, "fixed"])
        nodes.append(primitive)
    previous = 1
    for node_id in range(2, length + 2):
        if mixed and node_id % 5 == 0:
            node = _node(node_id, "Reroute", [{"name": "", "type": "*", "link": None}], ["*"], [])
        else:
            sockets = [{"name": "image", "type": "IMAGE", "link": None}] + [
                {"name": n, "type": t, "widget": {"name": n}, "link": None}
                for n, t in FILTER_WIDGETS
            ]
            mode = 4 if mixed and node_id % 7 == 0 else 0
            node = _node(
                node_id,
                "Filter",
                sockets,
                ["IMAGE"],
                [node_id, "randomize", 0.5, "multiply", f"n{node_id}"],
                mode,
            )
            if primitive is not None:
                link(primitive["id"], node, 1, "INT")
        nodes.append(node)
        link(previous, node, 0, "IMAGE")
        previous = node_id
    return {
        "id": "bench",
        "revision": 0,
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
    }


def make_registry() -> Registry:
    registry = Registry()
    registry.add_node("bench", Source, class_type="Source")
    registry.add_node("bench", Filter, class_type="Filter", display_name="Filter Image")
    return registry


def measure(workflow: dict[str, Any], registry: Registry, repeats: int) -> tuple[float, float, int]:
    """Median and best conversion time in ms, and the API node count."""
    times = []
    prompt: dict[str, Any] = {}
    for _ in range(repeats):
        started = time.perf_counter()
        prompt = convert_workflow(workflow, registry)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), min(times), len(prompt)


def main() -> int:
    registry = make_registry()
    print("| shape | UI nodes | API nodes | median ms | best ms | µs/node (median) |")
    print("|---|---:|---:|---:|---:|---:|")
    failed = False
    for mixed in (False, True):
        for length in (100, 1_000, 10_000):
            workflow = build_chain(length, mixed)
            ms, best, api_nodes = measure(workflow, registry, repeats=5 if length >= 10_000 else 15)
            ui_nodes = len(workflow["nodes"])
            print(
                f"| {'mixed' if mixed else 'plain'} | {ui_nodes:,} | {api_nodes:,} | {ms:.1f} | "
                f"{best:.1f} | {ms * 1000 / ui_nodes:.1f} |"
            )
            if 1_000 <= length < 10_000 and ms >= 100:
                failed = True
    if failed:
        print("FAIL: 1,000-node conversion is over the 100 ms target", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
