"""Executor overhead on model-free graphs: chains and wide graphs (many parallel branches and outputs) of 100 / 1,000 / 10,000 nodes.

Measures validation, a cold run (every node executes a trivial classic node), and a fully
cached re-queue, and prints a markdown table. Targets (issue 2): < 50 µs of overhead per
node, linear growth, a 10,000-deep chain runs, cached re-queue of 1,000 nodes < 20 ms.
Anchor, ComfyUI 0.8.0 on the same 2-core machine: 0.7 ms/node at depth 100, 9 ms/node at
depth 600, 6.8 s for a cached re-queue of a 600-deep chain, RecursionError at depth ~983.

Run: ``python bench/bench_executor.py`` (``nox -s bench`` runs every bench script).
"""

from __future__ import annotations

import statistics
import sys
import time

import loom
from loom.executor.executor import Executor
from loom.plugins import PluginHost
from loom.registry import collect


class Value:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1, "min": 0, "max": 1_000_000})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        return (value,)


class Add:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "a": ("INT", {"forceInput": True}),
                "b": ("INT", {"default": 1, "min": 0, "max": 10}),
            }
        }

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, a, b):
        return (a + b,)


class Show:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self, value):
        return {"ui": {"text": [str(value)]}}


class BenchNodes:
    @loom.hookimpl
    def register_nodes(self, register):
        for cls in (Value, Add, Show):
            register(cls, class_type=f"Bench{cls.__name__}")


def chain(n: int) -> dict:
    prompt = {"0": {"class_type": "BenchValue", "inputs": {"value": 1}}}
    for i in range(1, n - 1):
        prompt[str(i)] = {"class_type": "BenchAdd", "inputs": {"a": [str(i - 1), 0], "b": 1}}
    prompt["out"] = {"class_type": "BenchShow", "inputs": {"value": [str(n - 2), 0]}}
    return prompt


def wide(n: int) -> dict:
    """n/2 independent Value->Add branches, each ending in its own output node... and one
    Sum (INPUT_IS_LIST) per branch pair would not be ComfyUI-shaped, so width comes from
    many parallel branches and outputs: every output is validated and scheduled."""
    prompt = {}
    for i in range(n // 3):
        prompt[f"v{i}"] = {"class_type": "BenchValue", "inputs": {"value": i}}
        prompt[f"a{i}"] = {"class_type": "BenchAdd", "inputs": {"a": [f"v{i}", 0], "b": 1}}
        prompt[f"s{i}"] = {"class_type": "BenchShow", "inputs": {"value": [f"a{i}", 0]}}
    return prompt


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(name: str, prompt: dict, registry) -> dict:
    n = len(prompt)
    executor = Executor(registry=registry)
    validate_s = best_of(3, lambda: executor.validate(prompt))
    cold = []
    for _ in range(3):
        executor = Executor(registry=registry)
        started = time.perf_counter()
        result = executor.run_prompt(prompt)
        cold.append(time.perf_counter() - started)
        assert result.status_str == "success", result.error
    cached_s = best_of(3, lambda: executor.run_prompt(prompt))
    return {
        "graph": name,
        "nodes": n,
        "validate_us_per_node": validate_s / n * 1e6,
        "run_us_per_node": min(cold) / n * 1e6,
        "cached_requeue_ms": cached_s * 1e3,
        "median_run_s": statistics.median(cold),
    }


def main() -> int:
    sys.setrecursionlimit(1000)  # prove nothing recurses over the graph
    host = PluginHost(entry_points=False, builtins=())
    host.register(BenchNodes(), "bench")
    host.load()
    registry = collect(host)
    rows = []
    for n in (100, 1_000, 10_000):
        rows.append(measure("chain", chain(n), registry))
        rows.append(measure("wide", wide(n), registry))
    print(
        "| graph | nodes | validate µs/node | run µs/node (validate+schedule+cache+trivial node) | cached re-queue ms |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['graph']} | {r['nodes']} | {r['validate_us_per_node']:.1f} | {r['run_us_per_node']:.1f} | {r['cached_requeue_ms']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
