"""Declarative nodes: an attrs class whose fields are its inputs and whose ``run`` is the work.

::

    @loom.node("ImageInvert", category="image", display_name="Invert Image")
    class ImageInvert:
        \"\"\"Invert the colours of an image.\"\"\"
        image: Image

        def run(self, ctx) -> Image:
            return 1.0 - self.image

Field annotations give socket types (``Image`` -> ``IMAGE``, ``int`` -> ``INT``); ``ui.*``
helpers give widget options. The return annotation of ``run`` gives the outputs: one socket
type, an ``@loom.outputs`` attrs class for several named outputs, or ``NodeOutput`` /
``None`` with outputs declared on the decorator. Bad declarations fail here, at
registration, not on first run.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from loom.errors import NodeDefinitionError
from loom.nodes.compat import accepted_args, call_with_accepted
from loom.nodes.dynamic import DynamicCombo, unevaluated_lazy
from loom.nodes.fields import META, OUTPUTS_MARK, InputMeta, output, outputs, socket_type, ui
from loom.nodes.spec import (
    ENVIRONMENT_NAMES,
    InputTypes,
    NodeDef,
    NodeEnvironment,
    NodeOutput,
    OutputDef,
)

if TYPE_CHECKING:
    from loom.executor.context import RunContext
    from loom.registry import Registry

_NODE_MARK = "__loom_node__"

__all__ = [
    "DeclarativeImpl",
    "InputMeta",
    "compile_declarative",
    "is_declarative",
    "node",
    "output",
    "outputs",
    "socket_type",
    "ui",
]


def node(
    class_type: str,
    *,
    category: str = "loom",
    display_name: str | None = None,
    output_node: bool = False,
    outputs: Sequence[OutputDef] | None = None,
    hidden: Mapping[str, str] | None = None,
    input_is_list: bool = False,
    not_idempotent: bool = False,
    deprecated: bool = False,
    experimental: bool = False,
    v3: bool = False,
) -> Callable[[type], type]:
    """Declare a node class. The class becomes a frozen, keyword-only attrs class.

    :param class_type: the node id, verbatim as ComfyUI names it (``"KSampler"``).
    :param outputs: explicit outputs, for ``run`` methods annotated ``-> NodeOutput``.
    :param hidden: hidden inputs to advertise, e.g. ``{"prompt": "PROMPT"}``; their values
        reach ``run`` through ``ctx``, not as fields.
    :param v3: ComfyUI 0.8 declares this node with its V3 schema, so ``/object_info``
        renders it in that form (``["COMBO", {"options": [...]}]``, every key present...).
    """

    def decorate(cls: type) -> type:
        if not attrs.has(cls):
            cls = attrs.frozen(kw_only=True)(cls)
        if not callable(getattr(cls, "run", None)):
            raise NodeDefinitionError(
                f"node {class_type}: {cls.__name__} has no run(self, ctx) method"
            )
        spec = _DeclaredSpec(
            class_type=class_type,
            category=category,
            display_name=display_name,
            output_node=output_node,
            explicit_outputs=tuple(outputs) if outputs is not None else None,
            hidden=dict(hidden or {}),
            input_is_list=input_is_list,
            not_idempotent=not_idempotent,
            deprecated=deprecated,
            experimental=experimental,
            v3=v3,
        )
        setattr(cls, _NODE_MARK, spec)
        return cls

    return decorate


@attrs.frozen
class _DeclaredSpec:
    class_type: str
    category: str
    display_name: str | None
    output_node: bool
    explicit_outputs: tuple[OutputDef, ...] | None
    hidden: dict[str, str]
    input_is_list: bool
    not_idempotent: bool
    deprecated: bool
    experimental: bool
    v3: bool = False


def is_declarative(cls: Any) -> bool:
    return isinstance(cls, type) and hasattr(cls, _NODE_MARK)


@attrs.frozen
class _InputField:
    name: str
    type: str
    meta: InputMeta

    @property
    def lazy(self) -> bool:
        """Whether the input, or a slot inside a dynamic input, is lazy."""
        if self.meta.dynamic is not None:
            return self.meta.dynamic.has_lazy
        return bool(self.meta.options.get("lazy"))


class DeclarativeImpl:
    """Runs an ``@loom.node`` class: builds the attrs instance per call and calls ``run``."""

    def __init__(
        self,
        cls: type,
        fields: list[_InputField],
        hidden: Mapping[str, str],
        output_count: int,
        multi_output: bool,
    ) -> None:
        self.cls = cls
        self.fields = fields
        self.hidden = dict(hidden)
        self.output_count = output_count
        self.multi_output = multi_output
        self._names = {field.name for field in fields}

    def input_types(self, env: NodeEnvironment | Registry | None) -> InputTypes:
        env = NodeEnvironment.of(env)
        sections: InputTypes = {"required": {}}
        for field in self.fields:
            options = dict(field.meta.options)
            if field.meta.dynamic is not None:
                spec = field.meta.dynamic.spec(options)
                sections.setdefault(field.meta.section, {})[field.name] = spec
                continue
            if field.meta.choices is not None:
                choices = field.meta.choices
                if callable(choices):
                    choices = call_with_accepted(choices, env.arguments())
                spec: list[Any] = [list(choices)]
            else:
                spec = [field.type]
            if options:  # ComfyUI sends ["IMAGE"], not ["IMAGE", {}], when there are none
                spec.append(options)
            sections.setdefault(field.meta.section, {})[field.name] = spec
        if self.hidden:
            sections["hidden"] = dict(self.hidden)
        return sections

    def create(self) -> None:
        return None

    def combo_source(self, name: str) -> Any:
        """What input ``name``'s combo options come from (a list or a live source), or None."""
        for field in self.fields:
            if field.name == name:
                return field.meta.choices
        return None

    # fingerprint and validate_inputs may also name ``registry``, ``folders`` or ``settings``
    # (the NodeEnvironment): ``settings`` for directories, ``folders`` for model files.
    def fingerprint(
        self, obj: Any, constants: dict[str, Any], env: NodeEnvironment = NodeEnvironment()
    ) -> Any:
        method = getattr(self.cls, "fingerprint", None)
        return (
            call_with_accepted(method, {**constants, **env.arguments()})
            if method is not None
            else None
        )

    def validate(
        self, obj: Any, inputs: dict[str, Any], env: NodeEnvironment = NodeEnvironment()
    ) -> bool | str:
        method = getattr(self.cls, "validate_inputs", None)
        return (
            call_with_accepted(method, {**inputs, **env.arguments()})
            if method is not None
            else True
        )

    def check_lazy_status(self, obj: Any, inputs: dict[str, Any]) -> list[str]:
        method = getattr(self.cls, "check_lazy_status", None)
        if method is None:  # as ComfyUI's default: every lazy input not evaluated yet
            wanted = []
            for f in self.fields:
                if f.meta.dynamic is not None:
                    wanted += unevaluated_lazy(f.name, f.meta.dynamic, inputs.get(f.name))
                elif f.lazy and inputs.get(f.name) is None:
                    wanted.append(f.name)
            return wanted
        return list(method(self._instance(inputs)) or [])

    def _instance(self, inputs: dict[str, Any]) -> Any:
        for f in self.fields:
            # ComfyUI 0.8 validates a DynamicCombo only once its key is given: say which
            # input a prompt left out instead of failing on a missing constructor argument
            if (
                isinstance(f.meta.dynamic, DynamicCombo)
                and f.name not in inputs
                and attrs.fields_dict(self.cls)[f.name].default is attrs.NOTHING
            ):
                raise ValueError(
                    f"{self.cls.__name__}: input {f.name!r} was not given (a DynamicCombo "
                    "needs one of its option keys)"
                )
        return self.cls(**{name: value for name, value in inputs.items() if name in self._names})

    def execute(self, obj: Any, inputs: dict[str, Any], ctx: RunContext) -> NodeOutput:
        result = self._instance(inputs).run(ctx)
        if isinstance(result, NodeOutput):
            return result
        if self.output_count == 0:
            return NodeOutput(values=())
        if self.multi_output:
            return NodeOutput(values=attrs.astuple(result, recurse=False))
        return NodeOutput(values=(result,))


def compile_declarative(cls: type, *, python_module: str | None = None) -> NodeDef:
    """Turn an ``@loom.node`` class into a :class:`NodeDef`, checking the declaration."""
    spec: _DeclaredSpec = getattr(cls, _NODE_MARK)
    where = f"node {spec.class_type} ({cls.__module__}.{cls.__qualname__})"
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
        run_hints = typing.get_type_hints(cls.run, include_extras=True)
    except Exception as exc:
        raise NodeDefinitionError(f"{where}: cannot resolve annotations: {exc}") from exc
    fields = []
    for field in attrs.fields(cls):
        meta = field.metadata.get(META, InputMeta())
        annotation = hints.get(field.name)
        if meta.choices is not None:
            _check_combo_source(meta.choices, f"{where} input {field.name!r}")
            wire = "COMBO"
        elif annotation is None:
            raise NodeDefinitionError(f"{where}: input {field.name!r} has no annotation")
        else:
            wire = meta.type or socket_type(annotation, f"{where} input {field.name!r}")
        fields.append(_InputField(field.name, wire, meta))
    outputs, multi = _outputs_of(spec, run_hints, where)
    if "return" not in run_hints and spec.explicit_outputs is None:
        raise NodeDefinitionError(
            f"{where}: run() needs a return annotation (use -> None for no outputs)"
        )
    impl = DeclarativeImpl(cls, fields, spec.hidden, len(outputs), multi)
    has_lazy = any(f.lazy for f in fields)
    return NodeDef(
        class_type=spec.class_type,
        impl=impl,
        outputs=outputs,
        display_name=spec.display_name,
        category=spec.category,
        description=inspect.cleandoc(cls.__doc__ or ""),
        python_module=python_module or cls.__module__,
        output_node=spec.output_node,
        input_is_list=spec.input_is_list,
        not_idempotent=spec.not_idempotent,
        deprecated=spec.deprecated,
        experimental=spec.experimental,
        has_output_tooltips=any(o.tooltip for o in outputs),
        v3=spec.v3,
        has_fingerprint=hasattr(cls, "fingerprint"),
        has_validate=hasattr(cls, "validate_inputs"),
        has_lazy_check=has_lazy,
        source_class=cls,
        # As VALIDATE_INPUTS: the inputs validate_inputs names skip the standard checks.
        validate_args=((accepted_args(cls.validate_inputs) or frozenset()) - ENVIRONMENT_NAMES)
        if hasattr(cls, "validate_inputs")
        else frozenset(),
    )


def _check_combo_source(choices: Any, where: str) -> None:
    if not callable(choices):
        return
    accepted = accepted_args(choices)
    if accepted is not None and not accepted <= ENVIRONMENT_NAMES:
        unknown = ", ".join(sorted(accepted - ENVIRONMENT_NAMES))
        raise NodeDefinitionError(
            f"{where}: a combo source may only take {', '.join(sorted(ENVIRONMENT_NAMES))} "
            f"as parameters, not {unknown}"
        )


def _outputs_of(
    spec: _DeclaredSpec, run_hints: dict[str, Any], where: str
) -> tuple[tuple[OutputDef, ...], bool]:
    if spec.explicit_outputs is not None:
        return spec.explicit_outputs, len(spec.explicit_outputs) > 1
    annotation = run_hints.get("return")
    if annotation is None or annotation is type(None) or annotation is NodeOutput:
        return (), False
    if isinstance(annotation, type) and getattr(annotation, OUTPUTS_MARK, False):
        result_hints = typing.get_type_hints(annotation, include_extras=True)
        found = []
        for field in attrs.fields(annotation):
            opts = field.metadata.get(META, OutputDef("", ""))
            wire = socket_type(result_hints[field.name], f"{where} output {field.name!r}")
            found.append(OutputDef(wire, opts.name or field.name, opts.is_list, opts.tooltip))
        return tuple(found), True
    wire = socket_type(annotation, f"{where} return value")
    return (OutputDef(wire, wire),), False
