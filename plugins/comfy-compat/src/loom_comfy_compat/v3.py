"""V3 node classes compiled into Loom's :class:`~loom.nodes.spec.NodeDef`, and V3 packages.

The schema is read at registration (a malformed one fails there, with every problem listed)
and again whenever ``/object_info`` or validation asks for inputs, so combo lists a node
computes in ``define_schema`` stay live. Execution goes through Loom's executor: hidden
inputs arrive as ``cls.hidden`` on a per-call subclass, lazy inputs through
``check_lazy_status``, ``NodeOutput(expand=...)`` as node expansion, ``ui`` as the
``executed`` payload, ``block_execution`` as an ExecutionBlocker on every output.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import Coroutine
from types import ModuleType
from typing import Any

from loom import ExecutionBlocker, NodeOutput, OutputDef
from loom.errors import NodeDefinitionError
from loom.frontend import InputTypes, NodeDef, accepted_args, call_with_accepted
from loom_comfy_compat.v3_dynamic import nested_inputs
from loom_comfy_compat.v3_info import template_id
from loom_comfy_compat.v3_node import ComfyNode, HiddenHolder, Schema, normalised, overrides
from loom_comfy_compat.v3_ui import ui_dict


def is_v3(node_class: Any) -> bool:
    return isinstance(node_class, type) and issubclass(node_class, ComfyNode)


def run_sync(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion from synchronous code, even inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    outcome: dict[str, Any] = {}
    context = contextvars.copy_context()  # the running node's context goes along

    def target() -> None:
        try:
            outcome["value"] = context.run(asyncio.run, coroutine)
        except BaseException as exc:  # handed back to the caller's thread below
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="loom-comfy-compat-async")
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _schema(cls: type, where: str) -> Schema:
    try:
        schema = cls.define_schema()
    except Exception as exc:
        raise NodeDefinitionError(
            f"{where}: define_schema() raised {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(schema, Schema):
        raise NodeDefinitionError(f"{where}: define_schema() must return io.Schema")
    schema.finalize()
    try:
        schema.validate()
    except Exception as exc:
        problem = "; ".join(str(exc).splitlines()) or type(exc).__name__
        raise NodeDefinitionError(f"{where}: {problem}") from exc
    return schema


class V3Impl:
    """Runs a V3 node class through Loom's executor (the class is never instantiated)."""

    def __init__(
        self,
        cls: type,
        where: str,
        output_count: int,
        enable_expand: bool,
        hidden_keys: dict[str, str],
    ) -> None:
        self.cls = cls
        self.where = where
        self.output_count = output_count
        self.enable_expand = enable_expand
        #: ``key in the inputs -> Hidden name`` for the hidden inputs the schema asks for:
        #: they go to ``cls.hidden``, not to arguments. A hidden input named like one of
        #: the node's own inputs (an output node's ``prompt`` next to a text ``prompt``)
        #: gets a key of its own, since the executor passes all inputs in one dict.
        self.hidden_keys = hidden_keys

    def input_types(self, registry: Any) -> InputTypes:
        sections = _schema(self.cls, self.where).v1_inputs()
        names = {name: key for key, name in self.hidden_keys.items()}
        if "hidden" in sections:
            sections["hidden"] = {names.get(k, k): v for k, v in sections["hidden"].items()}
        return sections

    def create(self) -> None:
        return None

    def fingerprint(self, obj: Any, constants: dict[str, Any], registry: Any = None) -> Any:
        if not overrides(self.cls, "fingerprint_inputs"):
            return None
        return call_with_accepted(self.cls.fingerprint_inputs, self._visible(constants))

    def validate(self, obj: Any, inputs: dict[str, Any], registry: Any = None) -> bool | str:
        if not overrides(self.cls, "validate_inputs"):
            return True
        return call_with_accepted(self.cls.validate_inputs, self._visible(inputs))

    def check_lazy_status(self, obj: Any, inputs: dict[str, Any]) -> list[str]:
        clone = self._with_hidden(inputs)
        return list(call_with_accepted(clone.check_lazy_status, self._visible(inputs)) or [])

    def _with_hidden(self, inputs: dict[str, Any]) -> type:
        holder = HiddenHolder(
            {self.hidden_keys[k]: v for k, v in inputs.items() if k in self.hidden_keys}
        )
        return type(self.cls.__name__, (self.cls,), {"hidden": holder})

    def execute(self, obj: Any, inputs: dict[str, Any], ctx: Any) -> NodeOutput:
        clone = self._with_hidden(inputs)
        result = clone.execute(**self._visible(inputs))
        if inspect.isawaitable(result):
            result = run_sync(result)
        return self._normalise(result)

    def _visible(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in inputs.items() if k not in self.hidden_keys}

    def _normalise(self, result: Any) -> NodeOutput:
        result = normalised(result, self.where, self.enable_expand)
        if result.block_execution is not None:
            blocker = ExecutionBlocker(result.block_execution)
            return NodeOutput(values=(blocker,) * self.output_count, ui=ui_dict(result.ui))
        return NodeOutput(values=tuple(result.args), ui=ui_dict(result.ui), expand=result.expand)


def _hidden_keys(schema: Schema) -> dict[str, str]:
    own = {item.id for item in schema.inputs}
    return {
        (f"loom_hidden_{hidden.name}" if hidden.name in own else hidden.name): hidden.name
        for hidden in schema.hidden
    }


def compile_v3(
    cls: type,
    class_type: str | None = None,
    display_name: str | None = None,
    python_module: str | None = None,
) -> NodeDef:
    """A :class:`NodeDef` for a V3 node class; malformed schemas fail here."""
    where = f"V3 node {cls.__module__}.{cls.__qualname__}"
    if not overrides(cls, "define_schema") or not overrides(cls, "execute"):
        raise NodeDefinitionError(f"{where}: a V3 node needs define_schema() and execute()")
    schema = _schema(cls, where)
    if class_type is not None and class_type != schema.node_id:
        raise NodeDefinitionError(
            f"{where} declares {schema.node_id!r} but was registered as {class_type!r}"
        )
    cls.RELATIVE_PYTHON_MODULE = python_module or cls.RELATIVE_PYTHON_MODULE
    outputs = tuple(
        OutputDef(
            type=output.get_io_type(),
            name=output.display_name or output.get_io_type(),
            is_list=bool(output.is_output_list),
            tooltip=output.tooltip,
            template_id=template_id(output),
        )
        for output in schema.outputs
    )
    validate_args = frozenset()
    if overrides(cls, "validate_inputs"):
        validate_args = accepted_args(cls.validate_inputs) or frozenset()
    return NodeDef(
        class_type=schema.node_id,
        impl=V3Impl(
            cls,
            where,
            len(outputs),
            schema.enable_expand,
            _hidden_keys(schema),
        ),
        outputs=outputs,
        display_name=display_name or schema.display_name,
        category=schema.category,
        description=schema.description,
        python_module=python_module or cls.RELATIVE_PYTHON_MODULE or "nodes",
        output_node=schema.is_output_node,
        input_is_list=schema.is_input_list,
        not_idempotent=schema.not_idempotent,
        deprecated=schema.is_deprecated,
        experimental=schema.is_experimental,
        api_node=schema.is_api_node,
        has_output_tooltips=any(o.tooltip for o in schema.outputs),
        has_fingerprint=overrides(cls, "fingerprint_inputs"),
        has_validate=overrides(cls, "validate_inputs"),
        has_lazy_check=any(i.lazy for i in nested_inputs(schema.inputs)),
        validate_args=validate_args,
        source_class=cls,
        v3=True,
    )


def entrypoint_nodes(module: ModuleType) -> list[type] | None:
    """The node classes of a package exposing ``async def comfy_entrypoint()``."""
    entrypoint = getattr(module, "comfy_entrypoint", None)
    if entrypoint is None:
        return None

    async def load() -> list[type]:
        extension = entrypoint()
        if inspect.isawaitable(extension):
            extension = await extension
        on_load = getattr(extension, "on_load", None)
        if on_load is not None:
            done = on_load()
            if inspect.isawaitable(done):
                await done
        nodes = extension.get_node_list()
        if inspect.isawaitable(nodes):
            nodes = await nodes
        return list(nodes)

    return run_sync(load())
