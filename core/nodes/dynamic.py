"""V3 dynamic inputs: ComfyUI 0.8's ``io.Autogrow``, ``io.DynamicCombo`` and ``io.DynamicSlot``.

An **Autogrow** input is one template input repeated as the user connects more: its slots
are named from a prefix (``image0``, ``image1``...) or from a list of names, and a prompt
sends them with dotted names (``"images.image0"``). As in ComfyUI 0.8 only the slots a prompt
gives are expanded (required when below ``min``), so a slot left out is never reported
missing, and a DynamicCombo left out is not checked (its node then fails when run).
A **DynamicCombo** is a dropdown whose chosen option brings its own inputs
(``"resize_type": "scale by multiplier"``, ``"resize_type.multiplier": 1.5``).
A **DynamicSlot** is an optional socket that, once connected, brings its own inputs
(``"guide": ["4", 0]``, ``"guide.strength": 0.5``).

Each lives in a node's ``INPUT_TYPES`` as one entry (``["COMFY_AUTOGROW_V3", {"template":
...}]``, ``["COMFY_DYNAMICCOMBO_V3", {"options": [...]}]``, ``["COMFY_DYNAMICSLOT_V3",
{"slotType": ..., "inputs": {...}}]``), which is what ``/object_info`` serves. This module
declares them (typed, checked at registration); :mod:`loom.nodes.dynamic_expansion`
(re-exported here) expands them against a node's live inputs: :func:`finalize_inputs` into
the flat inputs validation checks one by one (ComfyUI's ``get_finalized_class_inputs``),
:func:`nest_values` regrouping the flat values into what the node receives: a dict of slot
name -> value for an Autogrow, the chosen key plus its inputs for a DynamicCombo, the
connected value plus its inputs for a DynamicSlot (ComfyUI's ``build_nested_inputs``).
Grown slots and nested inputs may be lazy (``"lazy": True`` in their options): they are
evaluated only when the node's ``check_lazy_status`` names them, by dotted name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from loom.errors import NodeDefinitionError
from loom.nodes.dynamic_expansion import (
    AUTOGROW,
    DYNAMIC_COMBO,
    DYNAMIC_SLOT,
    DYNAMIC_TYPES,
    FinalizedInputs,
    finalize_inputs,
    has_dynamic,
    nest_values,
)

__all__ = [
    "AUTOGROW",
    "DYNAMIC_COMBO",
    "DYNAMIC_SLOT",
    "DYNAMIC_TYPES",
    "MAX_AUTOGROW_NAMES",
    "Autogrow",
    "DynamicCombo",
    "DynamicOption",
    "DynamicSlot",
    "FinalizedInputs",
    "Slot",
    "finalize_inputs",
    "has_dynamic",
    "input_dict",
    "nest_values",
    "unevaluated_lazy",
]

#: ComfyUI caps an Autogrow at 100 slot names.
MAX_AUTOGROW_NAMES = 100


@attrs.frozen
class Slot:
    """One input declared inside a dynamic input: its name and its classic spec
    (``("IMAGE",)``, ``("INT", {"default": 512, ...})``, ``(["a", "b"], {...})``)."""

    name: str
    spec: tuple[Any, ...]
    optional: bool = False

    @classmethod
    def socket(
        cls, name: str, type: str, *, optional: bool = False, lazy: bool = False, **options: Any
    ) -> Slot:
        """A socket slot of wire type ``type`` (``"IMAGE"``, ``"IMAGE,MASK"``); a ``lazy``
        one is evaluated only when the node's ``check_lazy_status`` asks for it."""
        return cls(name, (type, dict(options) | ({"lazy": True} if lazy else {})), optional)

    @property
    def lazy(self) -> bool:
        """Whether the slot is evaluated only on request."""
        return bool(len(self.spec) > 1 and self.spec[1].get("lazy"))

    def made_lazy(self) -> Slot:
        """This slot with ``"lazy": True`` in its options."""
        head, options = self.spec[0], dict(self.spec[1]) if len(self.spec) > 1 else {}
        return attrs.evolve(self, spec=(head, options | {"lazy": True}))

    @classmethod
    def widget(cls, name: str, field: Any) -> Slot:
        """A slot declared with a ``loom.ui`` helper: ``Slot.widget("width", ui.int(512))``."""
        from loom.nodes.fields import InputMeta

        meta = getattr(field, "metadata", {}).get("loom")
        if not isinstance(meta, InputMeta) or (meta.type is None and meta.choices is None):
            raise NodeDefinitionError(
                f"dynamic input slot {name!r}: Slot.widget takes a ui.int/float/string/"
                "boolean/combo field"
            )
        head: Any = list(meta.choices) if meta.choices is not None else meta.type
        return cls(name, (head, dict(meta.options)), meta.section == "optional")


def input_dict(slots: Sequence[Slot]) -> dict[str, dict[str, Any]]:
    """Slots as an ``INPUT_TYPES`` dict; ``required`` is always present, as in ComfyUI."""
    sections: dict[str, dict[str, Any]] = {"required": {}}
    for slot in slots:
        sections.setdefault("optional" if slot.optional else "required", {})[slot.name] = list(
            slot.spec
        )
    return sections


@attrs.frozen
class Autogrow:
    """A template input repeated as slots are connected (``io.Autogrow``).

    Give ``prefix`` (slots ``<prefix>0`` .. ``<prefix><max-1>``) or ``names``; ``min`` is what
    the UI shows, and validation checks a given slot below it as required (ComfyUI 0.8 never
    reports a slot left out). The node receives ``{slot name: value}`` for the slots given.
    """

    template: Slot
    prefix: str | None = None
    names: tuple[str, ...] | None = attrs.field(
        default=None, converter=lambda v: None if v is None else tuple(v)
    )
    min: int = 1
    max: int = 10

    def __attrs_post_init__(self) -> None:
        if (self.prefix is None) == (self.names is None):
            raise NodeDefinitionError("Autogrow needs exactly one of prefix= or names=")
        if self.min < 0 or not 1 <= self.max <= MAX_AUTOGROW_NAMES:
            raise NodeDefinitionError(
                f"Autogrow needs min >= 0 and 1 <= max <= {MAX_AUTOGROW_NAMES}, "
                f"got min={self.min}, max={self.max}"
            )

    @property
    def has_lazy(self) -> bool:
        """Whether grown slots are lazy."""
        return self.template.lazy

    def made_lazy(self) -> Autogrow:
        """This Autogrow with every grown slot lazy."""
        return attrs.evolve(self, template=self.template.made_lazy())

    def unevaluated(self, name: str, grouped: Mapping[str, Any]) -> list[str]:
        """Dotted names of the given lazy slots not evaluated yet (None)."""
        if not self.template.lazy:
            return []
        return [f"{name}.{slot}" for slot, value in grouped.items() if value is None]

    def spec(self, options: Mapping[str, Any]) -> list[Any]:
        """The ``INPUT_TYPES`` entry."""
        spec = self.template.spec
        head, template_options = spec[0], dict(spec[1]) if len(spec) > 1 else {}
        if head in ("INT", "FLOAT", "STRING", "BOOLEAN") or isinstance(head, list):
            template_options["forceInput"] = True  # a grown slot is always a socket
        template: dict[str, Any] = {
            "input": input_dict([attrs.evolve(self.template, spec=(head, template_options))])
        }
        if self.prefix is not None:
            template |= {"prefix": self.prefix, "min": self.min, "max": self.max}
        else:
            template |= {"names": list(self.names or ())[:MAX_AUTOGROW_NAMES], "min": self.min}
        return [AUTOGROW, {**options, "template": template}]


@attrs.frozen
class DynamicOption:
    """One choice of a :class:`DynamicCombo` and the inputs it brings."""

    key: str
    inputs: tuple[Slot, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen
class DynamicCombo:
    """A dropdown whose chosen option adds its own inputs (``io.DynamicCombo``).

    The node receives ``{<input name>: chosen key, <option input>: value, ...}``.
    """

    options: tuple[DynamicOption, ...] = attrs.field(converter=tuple)

    def __attrs_post_init__(self) -> None:
        if not self.options:
            raise NodeDefinitionError("DynamicCombo needs at least one option")

    @property
    def has_lazy(self) -> bool:
        """Whether any option brings a lazy input."""
        return any(slot.lazy for option in self.options for slot in option.inputs)

    def made_lazy(self) -> DynamicCombo:
        """This DynamicCombo with every option's inputs lazy."""
        return attrs.evolve(
            self,
            options=[
                attrs.evolve(o, inputs=[slot.made_lazy() for slot in o.inputs])
                for o in self.options
            ],
        )

    def unevaluated(self, name: str, grouped: Mapping[str, Any]) -> list[str]:
        """Dotted names of the chosen option's lazy inputs not evaluated yet (None)."""
        chosen = next((o for o in self.options if o.key == grouped.get(name)), None)
        if chosen is None:
            return []
        return [
            f"{name}.{slot.name}"
            for slot in chosen.inputs
            if slot.lazy and slot.name in grouped and grouped[slot.name] is None
        ]

    def spec(self, options: Mapping[str, Any]) -> list[Any]:
        """The ``INPUT_TYPES`` entry."""
        rendered = [{"key": o.key, "inputs": input_dict(o.inputs)} for o in self.options]
        return [DYNAMIC_COMBO, {**options, "options": rendered}]


_WIDGET_HEADS = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})


@attrs.frozen
class DynamicSlot:
    """An optional socket that, once connected, brings its own inputs (``io.DynamicSlot``).

    Unconnected, the node receives nothing for it (the field keeps its default, None) and
    its inputs are neither shown nor checked. Connected, the node receives
    ``{<input name>: connected value, <inner input>: value, ...}``. ``lazy`` makes the
    socket itself lazy; inner inputs are lazy by their own options.
    """

    slot_type: str
    inputs: tuple[Slot, ...] = attrs.field(default=(), converter=tuple)
    lazy: bool = False

    @property
    def has_lazy(self) -> bool:
        """Whether the socket or any of its inputs is lazy."""
        return self.lazy or any(slot.lazy for slot in self.inputs)

    def made_lazy(self) -> DynamicSlot:
        """This DynamicSlot with its socket and its inputs lazy."""
        return DynamicSlot(self.slot_type, [s.made_lazy() for s in self.inputs], lazy=True)

    def unevaluated(self, name: str, grouped: Mapping[str, Any]) -> list[str]:
        """Dotted names of its lazy socket / inputs not evaluated yet (None)."""
        found = [name] if self.lazy and name in grouped and grouped[name] is None else []
        return found + [
            f"{name}.{slot.name}"
            for slot in self.inputs
            if slot.lazy and slot.name in grouped and grouped[slot.name] is None
        ]

    def spec(self, options: Mapping[str, Any]) -> list[Any]:
        """The ``INPUT_TYPES`` entry; a widget-typed slot is forced to be a socket."""
        entry: dict[str, Any] = {**options}
        if self.lazy:
            entry["lazy"] = True
        entry |= {"slotType": self.slot_type, "inputs": input_dict(self.inputs)}
        if self.slot_type in _WIDGET_HEADS:
            entry["forceInput"] = True
        return [DYNAMIC_SLOT, entry]


def unevaluated_lazy(
    name: str, declared: Autogrow | DynamicCombo | DynamicSlot, grouped: Any
) -> list[str]:
    """Dotted names of the lazy inputs inside a dynamic input's grouped value that are not
    evaluated yet: what a node's default ``check_lazy_status`` asks for."""
    if not isinstance(grouped, Mapping):
        return []
    return declared.unevaluated(name, grouped)
