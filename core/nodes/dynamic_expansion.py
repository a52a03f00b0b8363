"""Expanding V3 dynamic inputs against a node's live inputs: the wire side of
:mod:`loom.nodes.dynamic`.

A node's ``INPUT_TYPES`` holds each dynamic input as one entry (``["COMFY_AUTOGROW_V3",
{"template": ...}]``, ``["COMFY_DYNAMICCOMBO_V3", {"options": [...]}]``,
``["COMFY_DYNAMICSLOT_V3", {"slotType": ..., "inputs": {...}}]``). :func:`finalize_inputs`
expands them into the flat inputs validation checks one by one, under dotted names
(ComfyUI's ``get_finalized_class_inputs``); :func:`nest_values` regroups flat values into
what the node receives (ComfyUI's ``build_nested_inputs``). Only these shapes are read, so
V3 packs' declarations (loom-comfy-compat) expand the same way as core's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "AUTOGROW",
    "DYNAMIC_COMBO",
    "DYNAMIC_SLOT",
    "DYNAMIC_TYPES",
    "FinalizedInputs",
    "finalize_inputs",
    "has_dynamic",
    "nest_values",
]

AUTOGROW = "COMFY_AUTOGROW_V3"
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
DYNAMIC_SLOT = "COMFY_DYNAMICSLOT_V3"
DYNAMIC_TYPES = frozenset({AUTOGROW, DYNAMIC_COMBO, DYNAMIC_SLOT})


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
        if flat not in live:  # ComfyUI 0.8 adds only the slots given: none is ever missing
            continue
        section = "required" if index < minimum and required else "optional"
        getattr(out, section)[flat] = slot_spec
        out.paths[flat] = flat
        given = True
    if not given:  # 0.8 hands nothing here (its execute then fails); {} as ComfyUI 0.10 does
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
    if flat not in live:  # ComfyUI 0.8 adds the combo only when its key is given
        return
    options = dict(_options(spec))
    choices = options.pop("options", None) or []
    keys = [choice.get("key") for choice in choices]
    # Checked as a plain combo of the keys: an unknown key is value_not_in_list here, where
    # 0.8 drops the entry unchecked and the node's execute then fails on the missing input.
    chosen = next((c for c in choices if c.get("key") == live[flat]), None)
    inner = (chosen.get("inputs") if chosen is not None else None) or {}
    _expand_entry_and_inner(out, empty, live, section, [keys, options], inner, prefix)


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
    _expand_entry_and_inner(out, empty, live, section, [slot_type, options], inner, prefix)


def _expand_entry_and_inner(
    out: FinalizedInputs,
    empty: list[str],
    live: Mapping[str, Any],
    section: str,
    entry_spec: Any,
    inner: Mapping[str, Any],
    prefix: list[str],
) -> None:
    """A given DynamicCombo / DynamicSlot: its own entry, checked as ``entry_spec`` and
    handed over inside its group under its own name, then the inputs it brings."""
    flat = ".".join(prefix)
    getattr(out, section)[flat] = entry_spec
    out.paths[flat] = f"{flat}.{prefix[-1]}"
    for inner_section, inputs in inner.items():
        if inner_section in ("required", "optional"):
            _parse(out, empty, live, inner_section, inputs or {}, prefix)
