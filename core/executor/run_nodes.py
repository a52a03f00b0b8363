"""The node definitions of one run's graph, and the cache signature of each node."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from loom.errors import LoomError
from loom.executor.cache import never_cached, node_signature
from loom.executor.dynamic_prompt import DynamicPrompt
from loom.executor.graph import is_link, topological_order
from loom.executor.node_calls import hidden_kinds, lazy_input_names
from loom.nodes.dynamic import finalize_inputs, has_dynamic, nest_values
from loom.nodes.spec import InputTypes, NodeDef

if TYPE_CHECKING:
    from loom.executor.executor import Executor


class RunNodes:
    """Looks up a run's nodes (definitions, input specs, lazy inputs) and signs them for the
    executor's cache; the graph may grow (expansions) and new nodes are signed as it does."""

    def __init__(self, executor: Executor, graph: DynamicPrompt) -> None:
        self.executor = executor
        self.registry = executor.registry
        self.env = executor.environment
        self.graph = graph
        self.signatures: dict[str, bytes] = {}
        self._input_types: dict[str, InputTypes] = {}
        self._dynamic: dict[str, bool] = {}

    def input_types(self, definition: NodeDef) -> InputTypes:
        found = self._input_types.get(definition.class_type)
        if found is None:
            found = self._input_types[definition.class_type] = definition.input_types(self.env)
        return found

    def has_dynamic(self, definition: NodeDef) -> bool:
        found = self._dynamic.get(definition.class_type)
        if found is None:
            found = self._dynamic[definition.class_type] = has_dynamic(self.input_types(definition))
        return found

    def sign(self, node_ids: list[str]) -> None:
        """Compute signatures upstream-first for ``node_ids`` (whose upstream is signed or listed)."""
        ordered, cyclic = topological_order(self.graph.nodes, node_ids)
        for node_id in ordered + cyclic:
            node = self.graph.nodes[node_id]
            definition = self.definition(node_id)
            fingerprint = None
            if definition.has_fingerprint:
                fingerprint = self._fingerprint(node_id, definition, node["inputs"])
            hidden = hidden_kinds(self.input_types(definition)).values()
            keyed_by_id = definition.not_idempotent or "UNIQUE_ID" in hidden
            self.signatures[node_id] = node_signature(
                node["class_type"],
                node["inputs"],
                self.signatures,
                fingerprint,
                node_id if keyed_by_id else None,
            )

    def _fingerprint(self, node_id: str, definition: NodeDef, inputs: Mapping[str, Any]) -> Any:
        constants = {k: v for k, v in inputs.items() if not is_link(v)}
        if self.has_dynamic(definition):  # fingerprint sees the values grouped, as run does
            finalized = finalize_inputs(self.input_types(definition), inputs)
            constants = nest_values(constants, finalized)
        try:
            obj = self.executor.object_for(node_id, definition)
            fingerprint = definition.impl.fingerprint(obj, constants, self.env)
        except Exception:  # ComfyUI: a raising IS_CHANGED means "always re-run"
            return never_cached()
        if isinstance(fingerprint, float) and fingerprint != fingerprint:
            return never_cached()  # NaN equals nothing, not even the last run's NaN
        return fingerprint

    def definition(self, node_id: str) -> NodeDef:
        class_type = self.graph.nodes[node_id]["class_type"]
        definition = self.registry.get_node(class_type)
        if definition is None:
            raise LoomError(f"node {node_id}: unknown node type {class_type!r}")
        return definition

    def lazy_names(self, node_id: str, definition: NodeDef) -> set[str]:
        """The node's inputs it evaluates only when its ``check_lazy_status`` asks."""
        if not definition.has_lazy_check:
            return set()
        spec = self.input_types(definition)
        if self.has_dynamic(definition):  # lazy grown slots / option inputs, by dotted name
            finalized = finalize_inputs(spec, self.graph.nodes[node_id]["inputs"])
            spec = {"required": finalized.required, "optional": finalized.optional}
        return lazy_input_names(spec)
