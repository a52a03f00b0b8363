"""Classic ComfyUI node classes, run unchanged.

A classic class declares ``INPUT_TYPES()`` (a classmethod), ``RETURN_TYPES``,
``FUNCTION`` and optionally ``RETURN_NAMES``, ``OUTPUT_NODE``, ``CATEGORY``,
``INPUT_IS_LIST``, ``OUTPUT_IS_LIST``, ``OUTPUT_TOOLTIPS``, ``DESCRIPTION``,
``IS_CHANGED``, ``VALIDATE_INPUTS``, ``check_lazy_status``, ``NOT_IDEMPOTENT``,
``DEPRECATED``, ``EXPERIMENTAL`` and ``API_NODE``. This module turns it into the same
:class:`~loom.nodes.spec.NodeDef` a declarative node compiles to.

Loom reads one attribute ComfyUI does not: ``COMFY_V3_SCHEMA = True`` marks a node ComfyUI
declares with ``io.Schema`` (rendered in that form by ``/object_info``), for the few such
nodes whose input names are not Python identifiers (``input_blocks.0.``) and so cannot be
declarative fields.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from loom.errors import NodeDefinitionError
from loom.nodes.spec import InputTypes, NodeDef, NodeEnvironment, NodeOutput, OutputDef

if TYPE_CHECKING:
    from loom.executor.context import RunContext
    from loom.registry import Registry


def is_classic(cls: Any) -> bool:
    return isinstance(cls, type) and hasattr(cls, "INPUT_TYPES") and hasattr(cls, "RETURN_TYPES")


def accepted_args(func: Any) -> frozenset[str] | None:
    """Names a function accepts, or None when it takes ``**kwargs`` (accepts everything)."""
    params = inspect.signature(func).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.name not in ("self", "cls", "s"))


def call_with_accepted(func: Any, inputs: dict[str, Any]) -> Any:
    """Call ``func`` with the inputs it names (all of them if it takes ``**kwargs``)."""
    accepted = accepted_args(func)
    if accepted is None:
        return func(**inputs)
    return func(**{name: value for name, value in inputs.items() if name in accepted})


class ClassicImpl:
    """Calls a classic class the way ComfyUI does (one instance per node id)."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.function = cls.FUNCTION

    def input_types(self, env: NodeEnvironment | Registry | None) -> InputTypes:
        return self.cls.INPUT_TYPES()

    def create(self) -> Any:
        return self.cls()

    def fingerprint(
        self, obj: Any, constants: dict[str, Any], env: NodeEnvironment = NodeEnvironment()
    ) -> Any:
        method = getattr(self.cls, "IS_CHANGED", None)
        if method is None:
            return None
        return call_with_accepted(method, constants)

    def validate(
        self, obj: Any, inputs: dict[str, Any], env: NodeEnvironment = NodeEnvironment()
    ) -> bool | str:
        method = getattr(self.cls, "VALIDATE_INPUTS", None)
        return True if method is None else call_with_accepted(method, inputs)

    def check_lazy_status(self, obj: Any, inputs: dict[str, Any]) -> list[str]:
        method = getattr(obj, "check_lazy_status", None)
        if method is None:
            return []
        return list(call_with_accepted(method, inputs) or [])

    def execute(self, obj: Any, inputs: dict[str, Any], ctx: RunContext) -> NodeOutput:
        result = getattr(obj, self.function)(**inputs)
        if isinstance(result, NodeOutput):
            return result
        if isinstance(result, dict):
            values = result.get("result", ())
            return NodeOutput(
                values=tuple(values) if values is not None else (),
                ui=result.get("ui"),
                expand=result.get("expand"),
            )
        if result is None:
            return NodeOutput(values=())
        if not isinstance(result, (tuple, list)):
            raise TypeError(
                f"{self.cls.__name__}.{self.function} returned {type(result).__name__}, expected a tuple"
            )
        return NodeOutput(values=tuple(result))


def compile_classic(
    cls: type, class_type: str, *, display_name: str | None = None, python_module: str | None = None
) -> NodeDef:
    """Adapt a classic class into a :class:`NodeDef`; malformed classes fail here."""
    where = f"node {class_type} ({cls.__module__}.{cls.__qualname__})"
    function = getattr(cls, "FUNCTION", None)
    if not isinstance(function, str) or not callable(getattr(cls, function, None)):
        raise NodeDefinitionError(
            f"{where}: FUNCTION must name a method of the class, got {function!r}"
        )
    try:
        inputs = cls.INPUT_TYPES()
    except Exception as exc:
        raise NodeDefinitionError(
            f"{where}: INPUT_TYPES() raised {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(inputs, dict):
        raise NodeDefinitionError(f"{where}: INPUT_TYPES() must return a dict")
    return_types = tuple(cls.RETURN_TYPES)
    names = tuple(getattr(cls, "RETURN_NAMES", None) or return_types)
    is_list = tuple(getattr(cls, "OUTPUT_IS_LIST", None) or (False,) * len(return_types))
    tooltips = getattr(cls, "OUTPUT_TOOLTIPS", None)
    if len(names) != len(return_types) or len(is_list) != len(return_types):
        raise NodeDefinitionError(
            f"{where}: RETURN_NAMES / OUTPUT_IS_LIST length differs from RETURN_TYPES"
        )
    outputs = tuple(
        OutputDef(
            type=rtype if isinstance(rtype, str) else "COMBO",
            name=names[i],
            is_list=bool(is_list[i]),
            tooltip=tooltips[i] if tooltips and i < len(tooltips) else None,
        )
        for i, rtype in enumerate(return_types)
    )
    validate = getattr(cls, "VALIDATE_INPUTS", None)
    validate_args = frozenset()
    if validate is not None:
        validate_args = accepted_args(validate) or frozenset()
    return NodeDef(
        class_type=class_type,
        impl=ClassicImpl(cls),
        outputs=outputs,
        display_name=display_name,
        category=getattr(cls, "CATEGORY", "sd"),
        description=getattr(cls, "DESCRIPTION", ""),
        python_module=python_module or getattr(cls, "RELATIVE_PYTHON_MODULE", None) or "nodes",
        output_node=bool(getattr(cls, "OUTPUT_NODE", False)),
        input_is_list=bool(getattr(cls, "INPUT_IS_LIST", False)),
        not_idempotent=bool(getattr(cls, "NOT_IDEMPOTENT", False)),
        deprecated=bool(getattr(cls, "DEPRECATED", False)),
        experimental=bool(getattr(cls, "EXPERIMENTAL", False)),
        api_node=getattr(cls, "API_NODE", None),
        v3=bool(getattr(cls, "COMFY_V3_SCHEMA", False)),
        has_output_tooltips=tooltips is not None,
        has_fingerprint=hasattr(cls, "IS_CHANGED"),
        has_validate=validate is not None,
        has_lazy_check=hasattr(cls, "check_lazy_status"),
        validate_args=validate_args,
        source_class=cls,
    )
