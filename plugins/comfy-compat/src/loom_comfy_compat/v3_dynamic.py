"""``io.Autogrow``, ``io.DynamicCombo`` and ``io.DynamicSlot``: V3 inputs whose set of
slots varies.

They render the ``INPUT_TYPES`` entries Loom's core expands (:mod:`loom.nodes.dynamic`
reads the same shapes): validation then checks each grown slot / chosen option's input /
connected slot's input like a plain one, and ``execute`` receives ``{slot: value}`` for an
Autogrow, ``{<id>: chosen key, <option input>: value}`` for a DynamicCombo and, once
connected, ``{<id>: value, <inner input>: value}`` for a DynamicSlot, as in ComfyUI.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from loom_comfy_compat.v3_info import create_input_dict_v1
from loom_comfy_compat.v3_io import ComfyTypeI, Input, WidgetInput, comfytype

#: ComfyUI caps an Autogrow at 100 slot names.
MAX_NAMES = 100


def input_dict(inputs: Sequence[Input]) -> dict[str, dict[str, Any]]:
    """Inputs as an ``INPUT_TYPES`` dict (``required`` always present), as nested inputs are."""
    return create_input_dict_v1(list(inputs))


@comfytype("COMFY_AUTOGROW_V3")
class Autogrow(ComfyTypeI):
    """A template input repeated as the user connects more (``images.image0``, ...)."""

    Type = dict

    class _Template:
        def __init__(self, input: Input) -> None:
            if is_dynamic(input):
                raise TypeError("an Autogrow template cannot itself be a dynamic input")
            self.input = copy.copy(input)
            if isinstance(self.input, WidgetInput):
                self.input.force_input = True  # grown slots are sockets
            self.names: list[str] = []
            self.min = 1

        def as_dict(self) -> dict[str, Any]:
            return {"input": input_dict([self.input])}

    class TemplatePrefix(_Template):
        """Slots ``<prefix>0`` .. ``<prefix><max - 1>``; a given one below ``min`` is checked as required."""

        def __init__(self, input: Input, prefix: str, min: int = 1, max: int = 10) -> None:
            super().__init__(input)
            if min < 0 or not 1 <= max <= MAX_NAMES:
                raise ValueError(f"Autogrow needs min >= 0 and 1 <= max <= {MAX_NAMES}")
            self.prefix, self.min, self.max = prefix, min, max
            self.names = [f"{prefix}{i}" for i in range(max)]

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | {"prefix": self.prefix, "min": self.min, "max": self.max}

    class TemplateNames(_Template):
        """Slots with the given names; a given one below ``min`` is checked as required."""

        def __init__(self, input: Input, names: list[str], min: int = 1) -> None:
            super().__init__(input)
            if min < 0:
                raise ValueError("Autogrow needs min >= 0")
            self.names, self.min = list(names)[:MAX_NAMES], min

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | {"names": self.names, "min": self.min}

    class Input(Input):
        def __init__(
            self, id: str, template: Any, display_name: str | None = None,
            optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
            extra_dict: dict[str, Any] | None = None,
        ) -> None:  # fmt: skip
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
            self.template = template

        def options(self) -> dict[str, Any]:
            return super().options() | {"template": self.template.as_dict()}


@comfytype("COMFY_DYNAMICCOMBO_V3")
class DynamicCombo(ComfyTypeI):
    """A dropdown whose chosen option adds its own inputs (``resize_type.width``)."""

    Type = dict

    class Option:
        def __init__(self, key: str, inputs: list[Input]) -> None:
            self.key = getattr(key, "value", key)  # a str Enum member counts as its value
            self.inputs = list(inputs)

        def as_dict(self) -> dict[str, Any]:
            return {"key": self.key, "inputs": input_dict(self.inputs)}

    class Input(Input):
        def __init__(
            self, id: str, options: list[Any], display_name: str | None = None,
            optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
            extra_dict: dict[str, Any] | None = None,
        ) -> None:  # fmt: skip
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
            self.choices = list(options)

        def options(self) -> dict[str, Any]:
            return super().options() | {"options": [o.as_dict() for o in self.choices]}


@comfytype("COMFY_DYNAMICSLOT_V3")
class DynamicSlot(ComfyTypeI):
    """An optional socket that, once connected, brings its own inputs (``guide.strength``).

    Unconnected, ``execute`` gets no argument for it; the slot is always optional and a
    widget-typed slot is forced to be a socket.
    """

    Type = dict

    class Input(Input):
        def __init__(
            self, slot: Input, inputs: list[Input], display_name: str | None = None,
            tooltip: str | None = None, lazy: bool | None = None,
            extra_dict: dict[str, Any] | None = None,
        ) -> None:  # fmt: skip
            if is_dynamic(slot):
                raise TypeError("a DynamicSlot's slot cannot itself be a dynamic input")
            self.slot = copy.copy(slot)
            # the slot's own settings win; the DynamicSlot's fill the gaps
            for attr, fallback in (("display_name", display_name), ("tooltip", tooltip),
                                   ("lazy", lazy)):  # fmt: skip
                if getattr(self.slot, attr) is None:
                    setattr(self.slot, attr, fallback)
            # as in ComfyUI, the slot's extra_dict (always set) wins over ``extra_dict``
            super().__init__(
                slot.id, self.slot.display_name, True, self.slot.tooltip, self.slot.lazy,
                self.slot.extra_dict,
            )  # fmt: skip
            self.inputs = list(inputs)
            self.force_input = True if isinstance(self.slot, WidgetInput) else None
            if self.force_input:
                self.slot.force_input = True

        def get_all(self) -> list[Input]:
            return [self.slot, *self.inputs]

        def validate(self) -> None:
            for item in self.get_all():
                item.validate()

        def options(self) -> dict[str, Any]:
            own = {"slotType": str(self.slot.get_io_type()), "inputs": input_dict(self.inputs)}
            if self.force_input:
                own["forceInput"] = True
            return super().options() | own


def is_dynamic(item: Input) -> bool:
    """Whether ``item`` is an Autogrow, DynamicCombo or DynamicSlot input."""
    return isinstance(item, (Autogrow.Input, DynamicCombo.Input, DynamicSlot.Input))


def nested_inputs(inputs: Sequence[Input]) -> list[Input]:
    """``inputs`` and every input inside their Autogrow templates and DynamicCombo options."""
    found: list[Input] = []
    for item in inputs:
        found.append(item)
        if isinstance(item, Autogrow.Input):
            found.extend(nested_inputs([item.template.input]))
        elif isinstance(item, DynamicCombo.Input):
            found.extend(nested_inputs([i for option in item.choices for i in option.inputs]))
        elif isinstance(item, DynamicSlot.Input):
            found.extend(nested_inputs(item.inputs))
    return found


__all__ = ["Autogrow", "DynamicCombo", "DynamicSlot"]
