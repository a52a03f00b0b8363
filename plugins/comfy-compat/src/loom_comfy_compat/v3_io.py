"""ComfyUI's V3 socket types (``comfy_api.latest.io``), written from its documented behaviour.

A node is ``class N(io.ComfyNode)`` with classmethods ``define_schema() -> io.Schema`` and
``execute(**inputs) -> io.NodeOutput``; optionally ``validate_inputs``,
``fingerprint_inputs`` and ``check_lazy_status``. Each socket type (``io.Int``,
``io.Image``, ``io.Custom("MY_TYPE")``) has ``Input`` and ``Output`` classes; an input
compiles to ComfyUI's V1 form ``(io_type, options)`` that ``/object_info`` serves.
:mod:`loom_comfy_compat.v3_node` holds the node class and its schema;
:mod:`loom_comfy_compat.v3` turns a node class into a Loom ``NodeDef``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any


def _pruned(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


class FolderType(str, enum.Enum):
    input = "input"
    output = "output"
    temp = "temp"


class UploadType(str, enum.Enum):
    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


class NumberDisplay(str, enum.Enum):
    number = "number"
    slider = "slider"


class RemoteOptions:
    """Where a combo fetches its options from (the frontend calls ``route``)."""

    def __init__(
        self,
        route: str,
        refresh_button: bool,
        control_after_refresh: str = "first",
        timeout: int | None = None,
        max_retries: int | None = None,
        refresh: int | None = None,
    ) -> None:
        self.route, self.refresh_button = route, refresh_button
        self.control_after_refresh = control_after_refresh
        self.timeout, self.max_retries, self.refresh = timeout, max_retries, refresh

    def as_dict(self) -> dict[str, Any]:
        return _pruned(
            {
                "route": self.route,
                "refresh_button": self.refresh_button,
                "control_after_refresh": self.control_after_refresh,
                "timeout": self.timeout,
                "max_retries": self.max_retries,
                "refresh": self.refresh,
            }
        )


class Input:
    """One input socket or widget; ``options()`` is its V1 options dict."""

    io_type: str = "*"

    def __init__(
        self,
        id: str,
        display_name: str | None = None,
        optional: bool = False,
        tooltip: str | None = None,
        lazy: bool | None = None,
        extra_dict: dict[str, Any] | None = None,
        raw_link: bool | None = None,
    ) -> None:
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = dict(extra_dict or {})
        self.raw_link = raw_link

    def get_io_type(self) -> str:
        return self.io_type

    def options(self) -> dict[str, Any]:
        own = _pruned(
            {
                "display_name": self.display_name,
                "tooltip": self.tooltip,
                "lazy": self.lazy,
                "rawLink": self.raw_link,
            }
        )
        return own | _pruned(self.extra_dict)

    def as_dict(self) -> dict[str, Any]:
        return self.options() | ({"optional": True} if self.optional else {})

    def get_all(self) -> list[Input]:
        """This input and any it carries inside (a DynamicSlot's own inputs)."""
        return [self]

    def validate(self) -> None:
        """Raise if this input is malformed; ``Schema.validate`` calls it. Nothing to check
        by default; packs override it for inputs of their own."""


class WidgetInput(Input):
    """An input with a widget: a default, and optionally no socket or a forced socket."""

    def __init__(
        self,
        id: str,
        display_name: str | None = None,
        optional: bool = False,
        tooltip: str | None = None,
        lazy: bool | None = None,
        default: Any = None,
        socketless: bool | None = None,
        widget_type: str | None = None,
        force_input: bool | None = None,
        extra_dict: dict[str, Any] | None = None,
        raw_link: bool | None = None,
    ) -> None:
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input

    def get_io_type(self) -> str:
        return self.widget_type or self.io_type

    def options(self) -> dict[str, Any]:
        return super().options() | _pruned(
            {
                "default": self.default,
                "socketless": self.socketless,
                "widgetType": self.widget_type,
                "forceInput": self.force_input,
            }
        )


class Output:
    """One output socket; an output without an id gets ``_<index>_<TYPE>_``."""

    io_type: str = "*"

    def __init__(
        self,
        id: str | None = None,
        display_name: str | None = None,
        tooltip: str | None = None,
        is_output_list: bool = False,
    ) -> None:
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    def get_io_type(self) -> str:
        return self.io_type

    def as_dict(self) -> dict[str, Any]:
        """The output as ``NodeInfoV3`` lists it."""
        return _pruned(
            {
                "display_name": self.display_name,
                "tooltip": self.tooltip,
                "is_output_list": self.is_output_list,
            }
        )

    def validate(self) -> None:
        """Raise if this output is malformed; ``Schema.validate`` calls it."""


class ComfyTypeI:
    """A socket type that only has inputs."""

    io_type: str = "*"
    Type: Any = Any
    Input = Input


class ComfyTypeIO(ComfyTypeI):
    """A socket type with inputs and outputs."""

    Output = Output


def comfytype(io_type: str, **_: Any) -> Callable[[type], type]:
    """Bind ``io_type`` to a type class and to fresh copies of its ``Input``/``Output``."""

    def decorate(cls: type) -> type:
        cls.io_type = io_type
        for role in ("Input", "Output"):
            base = getattr(cls, role, None)
            if base is not None:
                bound = type(role, (base,), {"io_type": io_type, "Parent": cls})
                bound.__qualname__ = f"{cls.__qualname__}.{role}"
                setattr(cls, role, bound)
        return cls

    return decorate


def Custom(io_type: str) -> type[ComfyTypeIO]:
    """A socket type for a pack's own ``io_type`` (``io.Custom("MY_TYPE")``)."""
    return comfytype(io_type)(type(f"Custom_{io_type}", (ComfyTypeIO,), {}))


@comfytype("BOOLEAN")
class Boolean(ComfyTypeIO):
    Type = bool

    class Input(WidgetInput):
        def __init__(
            self, id: str, *args: Any, label_on: str | None = None, label_off: str | None = None,
            **kwargs: Any,
        ) -> None:  # fmt: skip
            super().__init__(id, *args, **kwargs)
            self.label_on, self.label_off = label_on, label_off

        def options(self) -> dict[str, Any]:
            return super().options() | _pruned(
                {"label_on": self.label_on, "label_off": self.label_off}
            )


class _NumberInput(WidgetInput):
    def __init__(
        self,
        id: str,
        display_name: str | None = None,
        optional: bool = False,
        tooltip: str | None = None,
        lazy: bool | None = None,
        default: Any = None,
        min: Any = None,
        max: Any = None,
        step: Any = None,
        control_after_generate: bool | None = None,
        display_mode: NumberDisplay | None = None,
        round: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(id, display_name, optional, tooltip, lazy, default, **kwargs)
        self.min, self.max, self.step, self.round = min, max, step, round
        self.control_after_generate = control_after_generate
        self.display_mode = display_mode

    def options(self) -> dict[str, Any]:
        display = self.display_mode
        return super().options() | _pruned(
            {
                "min": self.min,
                "max": self.max,
                "step": self.step,
                "round": self.round,
                "control_after_generate": self.control_after_generate,
                "display": display.value if isinstance(display, enum.Enum) else display,
            }
        )


@comfytype("INT")
class Int(ComfyTypeIO):
    Type = int
    Input = _NumberInput


@comfytype("FLOAT")
class Float(ComfyTypeIO):
    Type = float
    Input = _NumberInput


@comfytype("STRING")
class String(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(
            self, id: str, display_name: str | None = None, optional: bool = False,
            tooltip: str | None = None, lazy: bool | None = None, multiline: bool = False,
            placeholder: str | None = None, default: str | None = None,
            dynamic_prompts: bool | None = None, **kwargs: Any,
        ) -> None:  # fmt: skip
            super().__init__(id, display_name, optional, tooltip, lazy, default, **kwargs)
            self.multiline, self.placeholder = multiline, placeholder
            self.dynamic_prompts = dynamic_prompts

        def options(self) -> dict[str, Any]:
            return super().options() | _pruned(
                {
                    "multiline": self.multiline,
                    "placeholder": self.placeholder,
                    "dynamicPrompts": self.dynamic_prompts,
                }
            )


@comfytype("COMBO")
class Combo(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        """A dropdown; ``options`` is a list or an Enum class (its values are listed)."""

        def __init__(
            self, id: str, options: Any = None, display_name: str | None = None,
            optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
            default: Any = None, control_after_generate: bool | None = None,
            upload: UploadType | None = None, image_folder: FolderType | None = None,
            remote: RemoteOptions | None = None, **kwargs: Any,
        ) -> None:  # fmt: skip
            if isinstance(options, type) and issubclass(options, enum.Enum):
                options = [member.value for member in options]
            if isinstance(default, enum.Enum):
                default = default.value
            super().__init__(id, display_name, optional, tooltip, lazy, default, **kwargs)
            self.choices = list(options) if options is not None else []
            self.control_after_generate = control_after_generate
            self.upload, self.image_folder, self.remote = upload, image_folder, remote
            self.multiselect = False

        def options(self) -> dict[str, Any]:
            upload = {self.upload.value: True} if self.upload is not None else {}
            return super().options() | _pruned(
                {
                    "multiselect": self.multiselect,
                    "options": self.choices,
                    "control_after_generate": self.control_after_generate,
                    **upload,
                    "image_folder": self.image_folder.value if self.image_folder else None,
                    "remote": self.remote.as_dict() if self.remote else None,
                }
            )

    class Output(Output):
        def __init__(self, id: str | None = None, display_name: str | None = None,
                     options: list[Any] | None = None, tooltip: str | None = None,
                     is_output_list: bool = False) -> None:  # fmt: skip
            super().__init__(id, display_name, tooltip, is_output_list)
            self.choices = list(options or [])


@comfytype("COMBO")
class MultiCombo(ComfyTypeI):
    """A dropdown where several values may be chosen (``multi_select``)."""

    Type = list

    class Input(Combo.Input):
        def __init__(self, id: str, options: Any = None, *args: Any, placeholder: str | None = None,
                     chip: bool | None = None, **kwargs: Any) -> None:  # fmt: skip
            super().__init__(id, options, *args, **kwargs)
            self.multiselect = True
            self.placeholder, self.chip = placeholder, chip

        def options(self) -> dict[str, Any]:
            return super().options() | _pruned(
                {"multi_select": True, "placeholder": self.placeholder, "chip": self.chip}
            )


__all__ = [
    "Boolean",
    "Combo",
    "ComfyTypeI",
    "ComfyTypeIO",
    "Custom",
    "Float",
    "FolderType",
    "Input",
    "Int",
    "MultiCombo",
    "NumberDisplay",
    "Output",
    "RemoteOptions",
    "String",
    "UploadType",
    "WidgetInput",
    "comfytype",
]
