"""V3 dynamic inputs: ComfyUI 0.8's ``io.Autogrow`` and ``io.DynamicCombo``.

An **Autogrow** input is one template input repeated as the user connects more: its slots
are named from a prefix (``image0``, ``image1``...) or from a list of names, the first
``min`` are required, and a prompt sends them with dotted names (``"images.image0"``).
A **DynamicCombo** is a dropdown whose chosen option brings its own inputs
(``"resize_type": "scale by multiplier"``, ``"resize_type.multiplier": 1.5``).

Both live in a node's ``INPUT_TYPES`` as one entry (``["COMFY_AUTOGROW_V3", {"template":
...}]``, ``["COMFY_DYNAMICCOMBO_V3", {"options": [...]}]``), which is what ``/object_info``
serves. :func:`finalize_inputs` expands them against a node's live inputs into the flat
inputs validation checks one by one (ComfyUI's ``get_finalized_class_inputs``), and
:func:`nest_values` regroups the flat values into what the node receives: a dict of slot
name -> value for an Autogrow, the chosen key plus its inputs for a DynamicCombo
(ComfyUI's ``build_nested_inputs``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from loom.errors import NodeDefinitionError

__all__ = [
    "AUTOGROW",
    "DYNAMIC_COMBO",
    "DYNAMIC_TYPES",
    "MAX_AUTOGROW_NAMES",
    "Autogrow",
    "DynamicCombo",
    "DynamicOption",
    "FinalizedInputs",
    "Slot",
    "finalize_inputs",
    "has_dynamic",
    "input_dict",
    "nest_values",
]

AUTOGROW = "COMFY_AUTOGROW_V3"
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
DYNAMIC_TYPES = frozenset({AUTOGROW, DYNAMIC_COMBO})
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
    def socket(cls, name: str, type: str, *, optional: bool = False, **options: Any) -> Slot:
        """A socket slot of wire type ``type`` (``"IMAGE"``, ``"IMAGE,MASK"``)."""
        return cls(name, (type, dict(options)), optional)

    @classmethod
    def widget(cls, name: str, field: Any) -> Slot:
        """A slot declared with a ``loom.ui`` helper: ``Slot.widget("width", ui.int(512))``."""
        from loom.nodes.schema import InputMeta

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

    def spec(self, options: Mapping[str, Any]) -> list[Any]:
        """The ``INPUT_TYPES`` entry."""
        rendered = [{"key": o.key, "inputs": input_dict(o.inputs)} for o in self.options]
        return [DYNAMIC_COMBO, {**options, "options": rendered}]


def has_dynamic(input_types: Mapping[str, Any]) -> bool:
    """Whether any required/optional input is an Autogrow or DynamicCombo."""
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
    if not finalized.paths and not finalized.empty:
        return dict(values)
    result = {k: v for k, v in values.items() if k not in finalized.paths}
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
