"""Runs built-in nodes through the real plugin host and registry, as the executor does."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import attrs

import loom
from loom.executor.context import InterruptFlag
from loom.nodes.spec import NodeOutput
from loom.registry import Registry
from loom.settings import Settings
from loom.testing import make_registry


@attrs.frozen
class FakeRuntime:
    settings: Settings


@lru_cache(maxsize=1)
def builtin_registry() -> Registry:
    return make_registry()


def object_info_of(class_type: str) -> dict[str, Any]:
    """One built-in node's /object_info entry."""
    from loom.nodes.object_info import to_json

    registry = builtin_registry()
    definition = registry.get_node(class_type)
    assert definition is not None, class_type
    return to_json(definition, registry)


def make_ctx(
    base: Path,
    *,
    node_id: str = "1",
    prompt: dict | None = None,
    extra_data: dict | None = None,
    **settings: Any,
) -> loom.RunContext:
    runtime = FakeRuntime(Settings(base_directory=base, **settings))
    return loom.RunContext(
        node_id=node_id,
        prompt_id="p",
        prompt=prompt if prompt is not None else {},
        extra_data=extra_data or {},
        runtime=runtime,
        interrupt=InterruptFlag(),
    )


def execute(class_type: str, ctx: loom.RunContext, **inputs: Any) -> NodeOutput:
    definition = builtin_registry().get_node(class_type)
    assert definition is not None, class_type
    return definition.impl.execute(definition.impl.create(), inputs, ctx)


def run_one(class_type: str, ctx: loom.RunContext, **inputs: Any) -> Any:
    """The single output value of a one-output node."""
    (value,) = execute(class_type, ctx, **inputs).values
    return value
