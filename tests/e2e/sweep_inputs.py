"""Shared by the bad-input sweeps: every registered node's declared inputs read as typed
facts, the widget values a valid prompt would carry, and a runtime holding every plugin.

The sweeps build prompts from what each node declares (``INPUT_TYPES``), never from a
hand-written list, so a node added later is swept too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs

from loom.nodes.spec import NodeDef, NodeEnvironment

#: Widget types whose constants validation coerces and range-checks.
NUMBER_TYPES = ("INT", "FLOAT")
WIDGET_TYPES = (*NUMBER_TYPES, "STRING", "BOOLEAN")
#: Where a node's output goes when the node is not an output node itself (accepts any type).
SINK = "PreviewAny"
SINK_INPUT = "source"


@attrs.frozen
class InputFact:
    """One declared input of a node: its name, type, options and whether it is required."""

    name: str
    type: Any
    options: Mapping[str, Any]
    required: bool

    @property
    def is_combo(self) -> bool:
        return isinstance(self.type, (list, tuple)) or self.type == "COMBO"

    @property
    def choices(self) -> list[Any]:
        if isinstance(self.type, (list, tuple)):
            return list(self.type)
        return list(self.options.get("options") or [])

    @property
    def is_widget(self) -> bool:
        return self.is_combo or self.type in WIDGET_TYPES

    @property
    def is_dynamic(self) -> bool:
        """A V3 Autogrow/DynamicCombo/MatchType slot, expanded before validation."""
        return isinstance(self.type, str) and self.type.startswith("COMFY_")

    def default(self) -> Any:
        """The value a frontend puts in a new node's widget."""
        if self.is_combo:
            choices = self.choices
            return self.options.get("default", choices[0] if choices else "")
        if "default" in self.options:
            return self.options["default"]
        if self.type in NUMBER_TYPES:
            return self.options.get("min", 0)
        return {"STRING": "", "BOOLEAN": False}.get(self.type)


def input_facts(definition: NodeDef, env: NodeEnvironment) -> list[InputFact]:
    """The node's required then optional inputs (hidden ones are not the user's)."""
    declared = definition.input_types(env)
    facts = []
    for section in ("required", "optional"):
        for name, spec in (declared.get(section) or {}).items():
            kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
            options = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 else {}
            facts.append(InputFact(name, kind, options or {}, section == "required"))
    return facts


def every_plugin() -> list[str]:
    """Every installed Loom plugin's entry-point name."""
    return sorted({entry.name for entry in metadata.entry_points(group="loom")})


def sweep_runtime(base: Path, **named: object):
    """A runtime with core's built-ins, every installed plugin and ``named`` test plugins."""
    from loom.testing import make_runtime, make_settings

    return make_runtime(*every_plugin(), settings=make_settings(base), **named)


def producers(registry) -> dict[str, tuple[str, int]]:
    """For each output type some node produces: the first ``(class_type, slot)`` making it."""
    found: dict[str, tuple[str, int]] = {}
    for class_type, definition in sorted(registry.nodes.items()):
        for slot, output in enumerate(definition.outputs):
            if isinstance(output.type, str):
                found.setdefault(output.type, (class_type, slot))
    return found


def swept_nodes(registry) -> Iterator[tuple[str, NodeDef]]:
    """Every node type in a stable order."""
    yield from sorted(registry.nodes.items())
