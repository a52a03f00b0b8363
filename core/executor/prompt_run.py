"""One prompt's execution: a ready queue over a graph that can grow while it runs.

Nodes are pulled into the run from the outputs upstream, stopping at cached nodes and at
lazy inputs. A node whose ``check_lazy_status`` asks for more inputs goes back to waiting
on them; a node that returns a subgraph (expansion) waits on the subgraph's result nodes.
Every walk is an explicit loop: no recursion over the graph.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from loom.errors import DependencyCycleError, ExecutionInterrupted, NodeExecutionError
from loom.executor.cache import CachedOutput
from loom.executor.context import ExecutionBlocker, RunContext, running
from loom.executor.dynamic_prompt import DynamicPrompt
from loom.executor.graph import Prompt, id_sort_key, is_link, link_source
from loom.executor.node_calls import (
    hidden_kinds,
    merge_ui,
    merge_values,
    split_calls,
)
from loom.executor.reporting import ExecutionBlockedError, Reporter
from loom.executor.run_nodes import RunNodes
from loom.nodes.dynamic import finalize_inputs, nest_values
from loom.nodes.spec import NodeDef, NodeOutput

if TYPE_CHECKING:
    from loom.executor.executor import Executor


class PromptRun:
    """Executes one validated prompt against an executor's caches."""

    def __init__(
        self,
        executor: Executor,
        prompt_id: str,
        prompt: Prompt,
        outputs: list[str],
        extra_data: Mapping[str, Any],
        reporter: Reporter,
    ) -> None:
        self.executor = executor
        self.prompt_id = prompt_id
        self.graph = DynamicPrompt(prompt)
        self.outputs = list(outputs)
        self.extra_data = extra_data
        self.reporter = reporter
        self.nodes = RunNodes(executor, self.graph)
        #: node id -> cache signature, filled by :meth:`RunNodes.sign` (as the graph grows).
        self.signatures = self.nodes.signatures
        self.results: dict[str, tuple[list[Any], ...]] = {}
        self.ui: dict[str, dict[str, Any]] = {}
        self.executed: dict[str, None] = {}  # ordered set: ids finished or reused
        self.scheduled: set[str] = set()
        self.blockers: dict[str, set[str]] = {}
        self.dependents: dict[str, set[str]] = defaultdict(set)
        self.ready: list[str] = []
        self.expansions: dict[str, list[NodeOutput]] = {}
        self.current: str | None = None

    # -- scheduling ---------------------------------------------------------------------

    def require(self, node_ids: list[str]) -> None:
        """Pull nodes (and their non-lazy upstream) into the run."""
        stack = list(node_ids)
        while stack:
            node_id = stack.pop()
            if node_id in self.scheduled or node_id in self.results:
                continue
            self.scheduled.add(node_id)
            cached = self.executor.cache.get(self.signatures[node_id])
            if cached is not None:
                self._use_cached(node_id, cached)
                continue
            definition = self.nodes.definition(node_id)
            lazy = self.nodes.lazy_names(node_id, definition)
            deps = {
                link_source(value)[0]
                for name, value in self.graph.nodes[node_id]["inputs"].items()
                if is_link(value) and name not in lazy and link_source(value)[0] not in self.results
            }
            self._wait(node_id, deps)
            stack.extend(deps)

    def _wait(self, node_id: str, deps: set[str]) -> None:
        self.blockers[node_id] = set(deps)
        for dep in deps:
            self.dependents[dep].add(node_id)
        if not deps:
            self.ready.append(node_id)

    def _use_cached(self, node_id: str, cached: CachedOutput) -> None:
        self.results[node_id] = cached.values
        if cached.ui is not None and self.nodes.definition(node_id).output_node:
            self.ui[node_id] = dict(cached.ui)
            display = self.graph.get_display_node_id(node_id)
            self.reporter.executed(node_id, display, cached.ui)
        self._finish(node_id)

    def _finish(self, node_id: str) -> None:
        self.executed[node_id] = None
        for consumer in self.dependents.pop(node_id, ()):
            waiting = self.blockers.get(consumer)
            if waiting is None:
                continue
            waiting.discard(node_id)
            if not waiting:
                self.ready.append(consumer)

    # -- running ------------------------------------------------------------------------

    def run(self) -> None:
        """Run until every output is done; raises NodeExecutionError, DependencyCycleError or
        ExecutionInterrupted."""
        self.require(self.outputs)
        while self.ready:
            self.executor.interrupt_flag.check()
            node_id = self.ready.pop()
            self.current = node_id
            del self.blockers[node_id]
            if node_id in self.expansions:
                self._resolve_expansion(node_id)
            else:
                self._run_node(node_id)
        self.current = None
        if self.blockers:
            raise self._cycle_error()

    def _cycle_error(self) -> DependencyCycleError:
        """The nodes left waiting, less those that only wait on the cycle (peeled off)."""
        waiting = {node: set(deps) for node, deps in self.blockers.items()}
        waited_on = {dep for deps in waiting.values() for dep in deps}
        while unneeded := [node for node in waiting if node not in waited_on]:
            for node in unneeded:
                del waiting[node]
            waited_on = {dep for deps in waiting.values() for dep in deps}
        on_cycle = sorted(waiting, key=id_sort_key)
        return DependencyCycleError(
            {node: sorted(waiting[node] & waiting.keys(), key=id_sort_key) for node in on_cycle},
            {node: self.graph.nodes[node]["class_type"] for node in on_cycle},
        )

    def _gather(
        self, node_id: str, definition: NodeDef
    ) -> tuple[dict[str, list[Any]], ExecutionBlocker | None]:
        inputs: dict[str, list[Any]] = {}
        blocker = None
        for name, value in self.graph.nodes[node_id]["inputs"].items():
            if is_link(value):
                source, slot = link_source(value)
                produced = self.results.get(source)
                if produced is None:
                    inputs[name] = [None]  # an unevaluated lazy input
                    continue
                values = produced[slot] if slot < len(produced) else [None]
                for item in values:
                    if isinstance(item, ExecutionBlocker):
                        blocker = item
                inputs[name] = values
            else:
                inputs[name] = [value]
        for name, kind in hidden_kinds(self.nodes.input_types(definition)).items():
            inputs[name] = [self._hidden_value(node_id, kind)]
        return inputs, blocker

    def _hidden_value(self, node_id: str, kind: str) -> Any:
        return {
            "PROMPT": self.graph.original,
            "EXTRA_PNGINFO": self.extra_data.get("extra_pnginfo"),
            "UNIQUE_ID": node_id,
            "DYNPROMPT": self.graph,
            "AUTH_TOKEN_COMFY_ORG": self.extra_data.get("auth_token_comfy_org"),
            "API_KEY_COMFY_ORG": self.extra_data.get("api_key_comfy_org"),
        }.get(kind)

    def _run_node(self, node_id: str) -> None:
        definition = self.nodes.definition(node_id)
        inputs, blocker = self._gather(node_id, definition)
        if blocker is not None:
            self._block(node_id, definition, blocker, inputs)
            return
        obj = self.executor.object_for(node_id, definition)
        calls = split_calls(definition, inputs)
        if self.nodes.has_dynamic(definition):  # hand Autogrow / DynamicCombo values grouped
            finalized = finalize_inputs(
                self.nodes.input_types(definition), self.graph.nodes[node_id]["inputs"]
            )
            calls = [nest_values(call, finalized) for call in calls]
        try:
            if definition.has_lazy_check and self._needs_lazy(node_id, definition, obj, calls):
                return
        except Exception as exc:
            raise NodeExecutionError(node_id, definition.class_type, exc, inputs) from exc
        display = self.graph.get_display_node_id(node_id)
        parent = self.graph.get_parent_node_id(node_id)
        self.reporter.node_state(node_id, display, parent, display, "running")
        self.reporter.executing(node_id, display)
        ctx = RunContext(
            node_id=node_id,
            prompt_id=self.prompt_id,
            prompt=self.graph.original,
            extra_data=self.extra_data,
            runtime=self.executor.runtime,
            interrupt=self.executor.interrupt_flag,
            display_node_id=display,
            on_progress=lambda value, total, preview: self._progress(
                node_id, value, total, preview
            ),
        )
        try:
            with running(ctx):
                produced = [definition.impl.execute(obj, call, ctx) for call in calls]
        except ExecutionInterrupted:
            raise
        except Exception as exc:
            raise NodeExecutionError(node_id, definition.class_type, exc, inputs) from exc
        if any(p.expand for p in produced):
            self._expand(node_id, produced)
            return
        self._store(node_id, definition, produced, inputs)

    def _progress(self, node_id: str, value: int, total: int, preview: Any) -> None:
        display = self.graph.get_display_node_id(node_id)
        parent = self.graph.get_parent_node_id(node_id)
        if preview is not None:  # nodes make the picture; only the executor knows whose it is
            preview = attrs.evolve(
                preview,
                node_id=node_id,
                prompt_id=self.prompt_id,
                display_node_id=display,
                parent_node_id=parent,
                real_node_id=self.graph.get_real_node_id(node_id),
            )
        self.reporter.progress(node_id, value, total, preview)
        self.reporter.node_state(node_id, display, parent, display, "running", value, total)

    def _needs_lazy(
        self, node_id: str, definition: NodeDef, obj: Any, calls: list[dict[str, Any]]
    ) -> bool:
        wanted: set[str] = set()
        for call in calls:
            wanted.update(definition.impl.check_lazy_status(obj, call))
        node_inputs = self.graph.nodes[node_id]["inputs"]
        deps = set()
        for name in wanted:
            value = node_inputs.get(name)
            if is_link(value) and link_source(value)[0] not in self.results:
                deps.add(link_source(value)[0])
        if not deps:
            return False
        self._wait(node_id, deps)
        self.require(sorted(deps))
        return True

    def _block(
        self,
        node_id: str,
        definition: NodeDef,
        blocker: ExecutionBlocker,
        inputs: dict[str, list[Any]],
    ) -> None:
        self.results[node_id] = tuple([blocker] for _ in definition.outputs)
        if blocker.message is not None:
            error = ExecutionBlockedError(f"Execution Blocked: {blocker.message}")
            self.reporter.error(
                node_id,
                definition.class_type,
                error,
                list(self.executed),
                inputs,
                list(self.results),
                record=False,
                exception_type="ExecutionBlocked",
            )
        self._finish(node_id)

    def _store(
        self,
        node_id: str,
        definition: NodeDef,
        produced: list[NodeOutput],
        inputs: Mapping[str, list[Any]],
    ) -> None:
        values = merge_values(node_id, definition, [p.values for p in produced], inputs)
        self._record(node_id, values, merge_ui(produced))

    def _record(
        self, node_id: str, values: tuple[list[Any], ...], ui: dict[str, Any] | None
    ) -> None:
        self.results[node_id] = values
        display = self.graph.get_display_node_id(node_id)
        if ui is not None:
            self.ui[node_id] = ui
            self.reporter.executed(node_id, display, ui)
        self.executor.cache.put(self.signatures[node_id], CachedOutput(values, ui))
        self.reporter.node_state(
            node_id, display, self.graph.get_parent_node_id(node_id), display, "finished"
        )
        self._finish(node_id)

    # -- expansion ----------------------------------------------------------------------

    def _expand(self, node_id: str, produced: list[NodeOutput]) -> None:
        added: list[str] = []
        for part in produced:
            for new_id, new_node in (part.expand or {}).items():
                new_id = str(new_id)
                if new_id in self.graph.nodes:
                    raise NodeExecutionError(
                        node_id,
                        self.nodes.definition(node_id).class_type,
                        ValueError(f"expansion reuses existing node id {new_id}"),
                        {},
                    )
                self.graph.nodes[new_id] = {**new_node, "inputs": dict(new_node.get("inputs", {}))}
                self.graph.parent[new_id] = node_id
                added.append(new_id)
        self.nodes.sign(added)
        self.expansions[node_id] = produced
        deps = {
            link_source(v)[0]
            for part in produced
            for v in part.values
            if is_link(v) and link_source(v)[0] not in self.results
        }
        extra_outputs = [n for n in added if self.nodes.definition(n).output_node]
        self._wait(node_id, deps)
        self.require(sorted(deps) + extra_outputs)

    def _resolve_expansion(self, node_id: str) -> None:
        """The parent's outputs are its expansion's results (links resolved)."""
        definition = self.nodes.definition(node_id)
        produced = self.expansions.pop(node_id)
        merged: list[list[Any]] = [[] for _ in definition.outputs]
        for part in produced:
            for slot, value in enumerate(part.values[: len(merged)]):
                if is_link(value):
                    source, index = link_source(value)
                    merged[slot].extend(self.results[source][index])
                elif definition.outputs[slot].is_list:
                    merged[slot].extend(value)
                else:
                    merged[slot].append(value)
        ui = merge_ui(produced)
        self._record(node_id, tuple(merged), ui)
