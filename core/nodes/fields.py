"""Field declarations of ``@loom.node`` classes: the ``ui.*`` input helpers (widget options,
sections, dynamic inputs), ``output``/``outputs`` for named results, and the annotation ->
socket type rule. :mod:`loom.nodes.schema` compiles classes declared with them.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, get_args, get_origin

import attrs

from loom.errors import NodeDefinitionError
from loom.nodes.dynamic import (
    AUTOGROW,
    DYNAMIC_COMBO,
    DYNAMIC_SLOT,
    Autogrow,
    DynamicCombo,
    DynamicSlot,
)
from loom.nodes.spec import OutputDef
from loom.types import WIDGET_TYPES, Socket

META = "loom"
OUTPUTS_MARK = "__loom_outputs__"


@attrs.frozen
class InputMeta:
    """Widget options for one input field, stored in the attrs field metadata."""

    type: str | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict)
    choices: Sequence[Any] | Callable[..., list[Any]] | None = None
    section: str = "required"
    #: an Autogrow, DynamicCombo or DynamicSlot (:mod:`loom.nodes.dynamic`): the input's
    #: slots vary
    dynamic: Autogrow | DynamicCombo | DynamicSlot | None = None


class ui:
    """Field helpers that attach widget options to node inputs."""

    @staticmethod
    def _field(meta: InputMeta, default: Any = attrs.NOTHING) -> Any:
        if meta.section == "optional" and default is attrs.NOTHING:
            default = None
        return attrs.field(default=default, metadata={META: meta})

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
    def autogrow(
        template: Autogrow,
        *,
        tooltip: str | None = None,
        optional: bool = False,
        lazy: bool = False,
    ) -> Any:
        """A V3 Autogrow input (:class:`loom.nodes.dynamic.Autogrow`); the field receives
        ``{slot name: value}`` for the slots given. ``lazy`` makes every grown slot lazy:
        it is evaluated only when ``check_lazy_status`` names it (``"images.image1"``); by
        default the ones still None are asked for."""
        template = template.made_lazy() if lazy else template
        meta = InputMeta(
            AUTOGROW, ui._opts(tooltip=tooltip), section=_section(optional), dynamic=template
        )
        return ui._field(meta)

    @staticmethod
    def dynamic_combo(
        combo: DynamicCombo,
        *,
        tooltip: str | None = None,
        optional: bool = False,
        lazy: bool = False,
    ) -> Any:
        """A V3 DynamicCombo input (:class:`loom.nodes.dynamic.DynamicCombo`); the field
        receives ``{<field name>: chosen key, <option input>: value, ...}``. ``lazy`` makes
        every option's inputs lazy (``"mode.factor"``), as ``lazy`` does for plain inputs."""
        combo = combo.made_lazy() if lazy else combo
        meta = InputMeta(
            DYNAMIC_COMBO, ui._opts(tooltip=tooltip), section=_section(optional), dynamic=combo
        )
        return ui._field(meta)

    @staticmethod
    def dynamic_slot(slot: DynamicSlot, *, tooltip: str | None = None, lazy: bool = False) -> Any:
        """A V3 DynamicSlot input (:class:`loom.nodes.dynamic.DynamicSlot`), always optional:
        unconnected the field is None; connected it receives ``{<field name>: value,
        <inner input>: value, ...}``. ``lazy`` makes the socket and its inputs lazy."""
        slot = slot.made_lazy() if lazy else slot
        meta = InputMeta(DYNAMIC_SLOT, ui._opts(tooltip=tooltip), section="optional", dynamic=slot)
        return ui._field(meta)


def _section(optional: bool) -> str:
    return "optional" if optional else "required"


def output(*, name: str | None = None, is_list: bool = False, tooltip: str | None = None) -> Any:
    """Options for a field of an ``@loom.outputs`` class; ``name`` defaults to the field name."""
    return attrs.field(default=None, metadata={META: OutputDef("", name or "", is_list, tooltip)})


def outputs(cls: type) -> type:
    """Mark an attrs class as a multi-output result: each field is one named output."""
    cls = attrs.frozen(kw_only=True)(cls) if not attrs.has(cls) else cls
    setattr(cls, OUTPUTS_MARK, True)
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
