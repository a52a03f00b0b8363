"""The executor: validates prompts and runs them, keeping caches between prompts.

Every outcome of :meth:`Executor.execute` is an :class:`ExecutionResult`: a node raising,
an interrupt, or a bug in the executor itself all end as that prompt's error, and the
executor stays usable for the next prompt.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from loom.errors import DependencyCycleError, ExecutionInterrupted, NodeExecutionError
from loom.executor.cache import OutputCache
from loom.executor.context import InterruptFlag
from loom.executor.graph import Prompt
from loom.executor.prompt_run import PromptRun
from loom.executor.reporting import EventCallback, Reporter
from loom.executor.validate import ValidatedPrompt, validate_prompt
from loom.nodes.spec import NodeDef, NodeEnvironment

if TYPE_CHECKING:
    from loom.registry import Registry
    from loom.runtime import Runtime

log = logging.getLogger(__name__)


@attrs.frozen
class ExecutionResult:
    """How a prompt ended, in the shape history stores (ComfyUI's ``status`` and ``outputs``)."""

    prompt_id: str
    status_str: str  # "success" | "error"
    completed: bool
    messages: list[list[Any]]
    outputs: dict[str, dict[str, Any]]
    meta: dict[str, dict[str, Any]]
    error: dict[str, Any] | None = None
    interrupted: bool = False
    #: Every output value produced or reused, by node id (for embedding callers and tests).
    values: Mapping[str, tuple[list[Any], ...]] = attrs.field(factory=dict, repr=False)

    @property
    def status(self) -> dict[str, Any]:
        return {
            "status_str": self.status_str,
            "completed": self.completed,
            "messages": self.messages,
        }


class Executor:
    """Runs prompts for one runtime; one prompt at a time (the queue's worker calls it)."""

    def __init__(self, runtime: Runtime | None = None, *, registry: Registry | None = None) -> None:
        self.runtime = runtime
        self.registry = registry if registry is not None else runtime.registry  # type: ignore[union-attr]
        settings = runtime.settings if runtime is not None else None
        #: What live combos, validate_inputs and fingerprint see.
        self.environment = (
            NodeEnvironment(self.registry, runtime.folders, settings)
            if runtime is not None
            else NodeEnvironment(registry=self.registry)
        )
        self.cache = OutputCache(
            settings.cache_policy if settings else "classic",
            settings.cache_size if settings else 100,
            settings.cache_ram_headroom_gb if settings else 4.0,
        )
        self.objects: dict[tuple[str, str], Any] = {}
        self.interrupt_flag = InterruptFlag()
        self._lock = threading.Lock()

    def validate(
        self, prompt: Any, partial_targets: Iterable[str] | None = None
    ) -> ValidatedPrompt:
        """Check a prompt; raises :class:`~loom.errors.PromptValidationError` when nothing can run."""
        return validate_prompt(prompt, self.registry, partial_targets, self.environment)

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Ask the running prompt to stop at the next node or sampler step.

        With ``prompt_id``, the interrupt also reaches that prompt if its run has not
        begun yet (the queue already reports it running).
        """
        self.interrupt_flag.set(prompt_id)

    def reset(self) -> None:
        """Drop cached outputs and node objects (``/free`` with ``free_memory``)."""
        self.cache.clear()
        self.objects.clear()

    def object_for(self, node_id: str, definition: NodeDef) -> Any:
        key = (node_id, definition.class_type)
        obj = self.objects.get(key)
        if obj is None:
            obj = self.objects[key] = definition.impl.create()
        return obj

    def execute(
        self,
        prompt_id: str,
        prompt: Prompt,
        outputs: list[str],
        extra_data: Mapping[str, Any] | None = None,
        *,
        client_id: str | None = None,
        on_event: EventCallback | None = None,
    ) -> ExecutionResult:
        """Run a validated prompt's ``outputs``; never raises for the prompt's own failures."""
        with self._lock:
            self.interrupt_flag.begin(prompt_id)
            extra = dict(extra_data or {})
            reporter = Reporter(
                self.runtime, prompt_id, client_id or extra.get("client_id"), on_event
            )
            run = PromptRun(self, prompt_id, prompt, outputs, extra, reporter)
            reporter.start()
            error: dict[str, Any] | None = None
            interrupted = False
            try:
                run.nodes.sign(list(prompt))
                self.cache.begin_prompt(run.signatures.values())
                reporter.cached([n for n in prompt if run.signatures[n] in self.cache])
                run.run()
                reporter.success()
            except ExecutionInterrupted:
                interrupted = True
                node = run.current
                reporter.interrupted(node, _class_of(run, node), list(run.executed))
            except NodeExecutionError as failed:
                log.debug(
                    "node %s (%s) failed", failed.node_id, failed.class_type, exc_info=failed.cause
                )
                error = reporter.error(
                    failed.node_id,
                    failed.class_type,
                    failed.cause,
                    list(run.executed),
                    failed.inputs,
                    list(run.results),
                )
            except DependencyCycleError as cycle:
                node = next(iter(cycle.waits_on))
                error = reporter.error(
                    node, _class_of(run, node), cycle, list(run.executed), {}, list(run.results)
                )
            except Exception as exc:  # an executor bug must end this prompt, not the worker
                log.exception("internal error while executing prompt %s", prompt_id)
                node = run.current
                error = reporter.error(
                    node, _class_of(run, node), exc, list(run.executed), {}, list(run.results)
                )
            finally:
                self.cache.end_prompt()
            meta = {
                node_id: {
                    "node_id": node_id,
                    "display_node": run.graph.get_display_node_id(node_id),
                    "parent_node": run.graph.get_parent_node_id(node_id),
                    "real_node_id": run.graph.get_real_node_id(node_id),
                }
                for node_id in run.ui
            }
            ok = error is None and not interrupted
            return ExecutionResult(
                prompt_id=prompt_id,
                status_str="success" if ok else "error",
                completed=ok,
                messages=reporter.messages,
                outputs=dict(run.ui),
                meta=meta,
                error=error,
                interrupted=interrupted,
                values=dict(run.results),
            )

    def run_prompt(
        self,
        prompt: Any,
        prompt_id: str = "local",
        extra_data: Mapping[str, Any] | None = None,
        on_event: EventCallback | None = None,
    ) -> ExecutionResult:
        """Validate then execute, for callers without a queue (tests, embedding)."""
        validated = self.validate(prompt)
        return self.execute(
            prompt_id, validated.prompt, validated.outputs, extra_data, on_event=on_event
        )


def _class_of(run: PromptRun, node_id: str | None) -> str | None:
    if node_id is None or node_id not in run.graph.nodes:
        return None
    return run.graph.nodes[node_id].get("class_type")


__all__ = ["ExecutionResult", "Executor"]
