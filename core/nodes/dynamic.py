"""V3 dynamic inputs: ComfyUI 0.8's ``io.Autogrow``, ``io.DynamicCombo`` and ``io.DynamicSlot``.

An **Autogrow** input is one template input repeated as the user connects more: its slots
are named from a prefix (``image0``, ``image1``...) or from a list of names, the first
``min`` are required, and a prompt sends them with dotted names (``"images.image0"``).
A **DynamicCombo** is a dropdown whose chosen option brings its own inputs
(``"resize_type": "scale by multiplier"``, ``"resize_type.multiplier": 1.5``).
A **DynamicSlot** is an optional socket that, once connected, brings its own inputs
(``"guide": ["4", 0]``, ``"guide.strength": 0.5``).

Each lives in a node's ``INPUT_TYPES`` as one entry (``["COMFY_AUTOGROW_V3", {"template":
...}]``, ``["COMFY_DYNAMICCOMBO_V3", {"options": [...]}]``, ``["COMFY_DYNAMICSLOT_V3",
{"slotType": ..., "inputs": {...}}]``), which is what ``/object_info`` serves. :func:`finalize_inputs` expands them against a node's live inputs into the flat
inputs validation checks one by one (ComfyUI's ``get_finalized_class_inputs``), and
:func:`nest_values` regroups the flat values into what the node receives: a dict of slot
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

AUTOGROW = "COMFY_AUTOGROW_V3"
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
DYNAMIC_SLOT = "COMFY_DYNAMICSLOT_V3"
DYNAMIC_TYPES = frozenset({AUTOGROW, DYNAMIC_COMBO, DYNAMIC_SLOT})
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

    Give ``prefix`` (slots ``<prefix>0`` .. ``<prefix><max-1>``) or ``names``; the first
    ``min`` slots are required. The node receives ``{slot name: value}`` for the slots given.
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


def has_dynamic(input_types: Mapping[str, Any]) -> bool:
    """Whether any required/optional input is an Autogrow, DynamicCombo or DynamicSlot."""
    return any(
        isinstance(head := _head(spec), str) and head in DYNAMIC_TYPES
        for section in ("required", "optional")
        for spec in (input_types.get(section) or {}).values()
    )


@attrs.frozen
class FinalizedInputs:
    """A node's inputs with its dynamic inputs expanded against the inputs it was given.

    ``required``/``optional`` map flat names (``"images.image0"``) to specs, as validation
    expects; a DynamicCombo's own entry becomes a combo of its keys. ``paths`` maps each
    flat name the node receives nested to its dotted path; ``empty`` names the dynamic
    inputs given no slot at all (they receive ``{}``).
    """

    required: dict[str, Any]
    optional: dict[str, Any]
    paths: dict[str, str]
    empty: tuple[str, ...]


def finalize_inputs(input_types: Mapping[str, Any], live: Mapping[str, Any]) -> FinalizedInputs:
    """Expand the dynamic inputs of ``input_types`` for a node whose inputs are ``live``."""
    out = FinalizedInputs({}, {}, {}, ())
    empty: list[str] = []
    for section in ("required", "optional"):
        _parse(out, empty, live, section, input_types.get(section) or {}, [])
    return attrs.evolve(out, empty=tuple(empty))


def nest_values(values: Mapping[str, Any], finalized: FinalizedInputs) -> dict[str, Any]:
    """Regroup flat values into the nested dicts dynamic inputs hand their node."""
    # a dotted name outside the expansion (an unconnected DynamicSlot's input, an unchosen
    # option's) is dropped, as ComfyUI hands a node only its finalized inputs
    result = {k: v for k, v in values.items() if k not in finalized.paths and "." not in k}
    for group in finalized.empty:
        _place(result, group, {})
    for key, path in finalized.paths.items():
        _place(result, path, values.get(key))
    return result


def _place(result: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    current = result
    for part in parents:
        nested = current.get(part)
        if not isinstance(nested, dict):
            nested = current[part] = {}
        current = nested
    current[last] = value


def _head(spec: Any) -> Any:
    return spec[0] if isinstance(spec, (list, tuple)) and spec else spec


def _options(spec: Any) -> Mapping[str, Any]:
    if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], Mapping):
        return spec[1]
    return {}


def _parse(
    out: FinalizedInputs,
    empty: list[str],
    live: Mapping[str, Any],
    section: str,
    inputs: Mapping[str, Any],
    prefix: list[str],
) -> None:
    for name, spec in inputs.items():
        head = _head(spec)
        if head == AUTOGROW:
            _expand_autogrow(out, empty, live, spec, [*prefix, name])
        elif head == DYNAMIC_COMBO:
            _expand_combo(out, empty, live, section, spec, [*prefix, name])
        elif head == DYNAMIC_SLOT:
            _expand_slot(out, empty, live, section, spec, [*prefix, name])
        else:
            flat = ".".join([*prefix, name])
            getattr(out, section)[flat] = spec
            if prefix:
                out.paths[flat] = flat


def _expand_autogrow(
    out: FinalizedInputs,
    empty: list[str],
    live: Mapping[str, Any],
    spec: Any,
    prefix: list[str],
) -> None:
    template = _options(spec).get("template") or {}
    if "names" in template:
        names = list(template["names"])
    else:
        names = [f"{template.get('prefix', '')}{i}" for i in range(int(template.get("max", 0)))]
    minimum = int(template.get("min", 0))
    slot_spec, required = None, True
    for slot_section, slots in (template.get("input") or {}).items():
        if slots:
            slot_spec = next(iter(slots.values()))
            required = slot_section == "required"
            break
    if slot_spec is None:
        return
    given = False
    for index, name in enumerate(names):
        flat = ".".join([*prefix, name])
        section = "required" if index < minimum and required else "optional"
        if flat in live or section == "required":
            getattr(out, section)[flat] = slot_spec
        if flat in live:
            out.paths[flat] = flat
            given = True
    if not given:
        empty.append(".".join(prefix))


def _expand_combo(
    out: FinalizedInputs,
    empty: list[str],
    live: Mapping[str, Any],
    section: str,
    spec: Any,
    prefix: list[str],
) -> None:
    flat = ".".join(prefix)
    options = dict(_options(spec))
    choices = options.pop("options", None) or []
    keys = [choice.get("key") for choice in choices]
    getattr(out, section)[flat] = [keys, options]  # validated as a plain combo of the keys
    if flat not in live:
        return
    out.paths[flat] = f"{flat}.{prefix[-1]}"
    chosen = next((c for c in choices if c.get("key") == live[flat]), None)
    if chosen is not None:
        for inner_section, inputs in (chosen.get("inputs") or {}).items():
            if inner_section in ("required", "optional"):
                _parse(out, empty, live, inner_section, inputs or {}, prefix)


def _expand_slot(
    out: FinalizedInputs,
    empty: list[str],
    live: Mapping[str, Any],
    section: str,
    spec: Any,
    prefix: list[str],
) -> None:
    flat = ".".join(prefix)
    if flat not in live:  # unconnected: nothing to check, nothing handed over
        return
    options = dict(_options(spec))
    inner = options.pop("inputs", None) or {}
    slot_type = options.pop("slotType", "*")
    # Checked as a plain socket of its slot type (ComfyUI 0.7/0.8 keep the entry's own
    # COMFY_DYNAMICSLOT_V3 type here, which no link type can match).
    getattr(out, section)[flat] = [slot_type, options]
    out.paths[flat] = f"{flat}.{prefix[-1]}"
    for inner_section, inputs in inner.items():
        if inner_section in ("required", "optional"):
            _parse(out, empty, live, inner_section, inputs or {}, prefix)
