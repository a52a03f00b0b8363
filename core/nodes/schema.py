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
from typing import TYPE_CHECKING, Any, get_args, get_origin

import attrs

from loom.errors import NodeDefinitionError
from loom.nodes.compat import accepted_args, call_with_accepted
from loom.nodes.dynamic import AUTOGROW, DYNAMIC_COMBO, Autogrow, DynamicCombo
from loom.nodes.spec import (
    ENVIRONMENT_NAMES,
    InputTypes,
    NodeDef,
    NodeEnvironment,
    NodeOutput,
    OutputDef,
)
from loom.types import WIDGET_TYPES, Socket

if TYPE_CHECKING:
    from loom.executor.context import RunContext
    from loom.registry import Registry

_META = "loom"
_OUTPUTS_MARK = "__loom_outputs__"
_NODE_MARK = "__loom_node__"


@attrs.frozen
class InputMeta:
    """Widget options for one input field, stored in the attrs field metadata."""

    type: str | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict)
    choices: Sequence[Any] | Callable[..., list[Any]] | None = None
    section: str = "required"
    #: an Autogrow or DynamicCombo (:mod:`loom.nodes.dynamic`): the input's slots vary
    dynamic: Autogrow | DynamicCombo | None = None


class ui:
    """Field helpers that attach widget options to node inputs."""

    @staticmethod
    def _field(meta: InputMeta, default: Any = attrs.NOTHING) -> Any:
        if meta.section == "optional" and default is attrs.NOTHING:
            default = None
        return attrs.field(default=default, metadata={_META: meta})

    @staticmethod
    def _opts(**kwargs: Any) -> dict[str, Any]:
        return {key: value for key, value in kwargs.items() if value is not None}

    @staticmethod
    def int(
        default: int = 0,
        *,
        min: int | None = None,
        max: int | None = None,
        step: int | None = None,
        tooltip: str | None = None,
        control_after_generate: bool | None = None,
        display: str | None = None,
        optional: bool = False,
        lazy: bool | None = None,
    ) -> Any:
        opts = ui._opts(
            default=default,
            min=min,
            max=max,
            step=step,
            tooltip=tooltip,
            control_after_generate=control_after_generate,
            display=display,
            lazy=lazy,
        )
        return ui._field(InputMeta("INT", opts, section=_section(optional)), default)

    @staticmethod
    def float(
        default: float = 0.0,
        *,
        min: float | None = None,
        max: float | None = None,
        step: float | None = None,
        round: float | bool | None = None,
        tooltip: str | None = None,
        display: str | None = None,
        optional: bool = False,
        lazy: bool | None = None,
    ) -> Any:
        opts = ui._opts(
            default=default,
            min=min,
            max=max,
            step=step,
            round=round,
            tooltip=tooltip,
            display=display,
            lazy=lazy,
        )
        return ui._field(InputMeta("FLOAT", opts, section=_section(optional)), default)

    @staticmethod
    def string(
        default: str = "",
        *,
        multiline: bool | None = None,
        dynamic_prompts: bool | None = None,
        tooltip: str | None = None,
        optional: bool = False,
        lazy: bool | None = None,
    ) -> Any:
        opts = ui._opts(
            default=default,
            multiline=multiline,
            dynamicPrompts=dynamic_prompts,
            tooltip=tooltip,
            lazy=lazy,
        )
        return ui._field(InputMeta("STRING", opts, section=_section(optional)), default)

    @staticmethod
    def boolean(
        default: bool | None = False,
        *,
        label_on: str | None = None,
        label_off: str | None = None,
        tooltip: str | None = None,
        optional: bool = False,
        lazy: bool | None = None,
    ) -> Any:
        """A BOOLEAN widget; ``default=None`` declares none (ComfyUI's ``io.Boolean.Input``
        given no default), which a client shows as off."""
        opts = ui._opts(
            default=default, label_on=label_on, label_off=label_off, tooltip=tooltip, lazy=lazy
        )
        return ui._field(InputMeta("BOOLEAN", opts, section=_section(optional)), default)

    @staticmethod
    def combo(
        options: Sequence[Any] | Callable[..., list[Any]],
        *,
        default: Any = None,
        tooltip: str | None = None,
        optional: bool = False,
        **extra: Any,
    ) -> Any:
        """A dropdown. ``options`` is a list, or a callable computing the list when asked,
        which names what it needs: ``registry``, ``folders`` and/or ``settings``
        (:class:`loom.nodes.spec.NodeEnvironment`), e.g. ``lambda folders: ...``."""
        if not callable(options) and not list(options) and default is None:
            raise NodeDefinitionError("ui.combo needs options or a default")
        opts = ui._opts(default=default, tooltip=tooltip, **extra)
        field_default = default if default is not None else attrs.NOTHING
        return ui._field(
            InputMeta(None, opts, choices=options, section=_section(optional)), field_default
        )

    @staticmethod
    def input(
        *,
        tooltip: str | None = None,
        optional: bool = False,
        lazy: bool | None = None,
        force_input: bool | None = None,
        **extra: Any,
    ) -> Any:
        """A socket input (its type comes from the annotation)."""
        opts = ui._opts(tooltip=tooltip, lazy=lazy, forceInput=force_input, **extra)
        return ui._field(InputMeta(None, opts, section=_section(optional)))

    @staticmethod
    def autogrow(template: Autogrow, *, tooltip: str | None = None, optional: bool = False) -> Any:
        """A V3 Autogrow input (:class:`loom.nodes.dynamic.Autogrow`); the field receives
        ``{slot name: value}`` for the slots given."""
        meta = InputMeta(
            AUTOGROW, ui._opts(tooltip=tooltip), section=_section(optional), dynamic=template
        )
        return ui._field(meta)

    @staticmethod
    def dynamic_combo(
        combo: DynamicCombo, *, tooltip: str | None = None, optional: bool = False
    ) -> Any:
        """A V3 DynamicCombo input (:class:`loom.nodes.dynamic.DynamicCombo`); the field
        receives ``{<field name>: chosen key, <option input>: value, ...}``."""
        meta = InputMeta(
            DYNAMIC_COMBO, ui._opts(tooltip=tooltip), section=_section(optional), dynamic=combo
        )
        return ui._field(meta)


def _section(optional: bool) -> str:
    return "optional" if optional else "required"


def output(*, name: str | None = None, is_list: bool = False, tooltip: str | None = None) -> Any:
    """Options for a field of an ``@loom.outputs`` class; ``name`` defaults to the field name."""
    return attrs.field(default=None, metadata={_META: OutputDef("", name or "", is_list, tooltip)})


def outputs(cls: type) -> type:
    """Mark an attrs class as a multi-output result: each field is one named output."""
    cls = attrs.frozen(kw_only=True)(cls) if not attrs.has(cls) else cls
    setattr(cls, _OUTPUTS_MARK, True)
    return cls


def socket_type(annotation: Any, where: str) -> str:
    """The wire type an annotation stands for."""
    if get_origin(annotation) is typing.Annotated:
        for extra in get_args(annotation)[1:]:
            if isinstance(extra, Socket):
                return extra.type
    if annotation in WIDGET_TYPES:
        return WIDGET_TYPES[annotation]
    if isinstance(annotation, Socket):
        return annotation.type
    raise NodeDefinitionError(f"{where}: cannot tell the socket type of annotation {annotation!r}")


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
        if method is None:
            return [f.name for f in self.fields if f.lazy and inputs.get(f.name) is None]
        return list(method(self._instance(inputs)) or [])

    def _instance(self, inputs: dict[str, Any]) -> Any:
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
        meta = field.metadata.get(_META, InputMeta())
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
    if isinstance(annotation, type) and getattr(annotation, _OUTPUTS_MARK, False):
        result_hints = typing.get_type_hints(annotation, include_extras=True)
        found = []
        for field in attrs.fields(annotation):
            opts = field.metadata.get(_META, OutputDef("", ""))
            wire = socket_type(result_hints[field.name], f"{where} output {field.name!r}")
            found.append(OutputDef(wire, opts.name or field.name, opts.is_list, opts.tooltip))
        return tuple(found), True
    wire = socket_type(annotation, f"{where} return value")
    return (OutputDef(wire, wire),), False
