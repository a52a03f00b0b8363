"""A node's ``/object_info`` entry in the form ComfyUI 0.8 serves for its V3-schema nodes.

ComfyUI builds the entry of a node declared with ``comfy_api.latest`` (``io.Schema``) from the
schema (``Schema.get_v1_info`` serialised with ``dataclasses.asdict``), not from
``INPUT_TYPES``. The entry has the classic shape with these differences, all reproduced here:

- every key is present: ``output_tooltips`` (a ``null`` per output without a tooltip),
  ``output_matchtypes`` (``null``), ``deprecated`` / ``experimental`` / ``api_node``
  (booleans); ``display_name`` is ``null`` when the schema names none;
- ``input`` always has ``required`` (``{}`` when the node has no required input), and
  ``input_order`` lists every section present, ``hidden`` included;
- each input is ``[TYPE, {options}]``, the options object present even when empty;
- a combo is ``["COMBO", {..., "multiselect": false, "options": [...]}]``, not
  ``[[choices], {...}]``;
- a STRING input always says ``"multiline"`` (``false`` unless multiline);
- hidden inputs are one-element lists (``"prompt": ["PROMPT"]``), and an output node always
  asks for ``prompt`` and ``extra_pnginfo``;
- ``output_matchtypes`` names, for each ``COMFY_MATCHTYPE_V3`` output, the template it shares
  with the node's match-type inputs (``null`` for the other outputs, and ``null`` as a whole
  when no output is one). Loom's outputs carry no template, so the node's single input
  template is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loom.nodes.dynamic import AUTOGROW, DYNAMIC_COMBO, DYNAMIC_SLOT
from loom.nodes.spec import SECTIONS, InputTypes, NodeDef

#: The hidden inputs ComfyUI's ``Schema.finalize`` adds to every V3 output node, in order.
OUTPUT_NODE_HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}

MATCH_TYPE = "COMFY_MATCHTYPE_V3"

#: Option keys a V3 combo writes before ``multiselect`` / ``options`` (the rest follow).
_LEADING_COMBO_KEYS = ("display_name", "tooltip", "lazy", "rawLink", "default", "socketless")


def v3_input(spec: Any) -> list[Any]:
    """One classic input spec (``[TYPE]``, ``[TYPE, opts]``, ``[[choices], opts]``) in V3 form."""
    head = spec[0]
    options = dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
    if isinstance(head, list | tuple):
        leading = {k: options.pop(k) for k in _LEADING_COMBO_KEYS if k in options}
        return ["COMBO", {**leading, "multiselect": False, "options": list(head), **options}]
    if head == "STRING":
        options.setdefault("multiline", False)
    if head == AUTOGROW and isinstance(options.get("template"), Mapping):
        template = dict(options["template"])
        template["input"] = _v3_sections(template.get("input") or {})
        options["template"] = template
    elif head == DYNAMIC_COMBO:
        options["options"] = [
            {**choice, "inputs": _v3_sections(choice.get("inputs") or {})}
            for choice in options.get("options") or ()
        ]
    elif head == DYNAMIC_SLOT and isinstance(options.get("inputs"), Mapping):
        options["inputs"] = _v3_sections(options["inputs"])
    return [head, options]


def _v3_sections(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs nested in a dynamic input (an Autogrow template, a DynamicCombo option,
    a DynamicSlot)."""
    return {
        section: {name: v3_input(spec) for name, spec in (specs or {}).items()}
        for section, specs in inputs.items()
    }


def v3_inputs(inputs: InputTypes, output_node: bool) -> dict[str, dict[str, Any]]:
    """The ``input`` object of a V3 node: ``required`` first and always present."""
    sections: dict[str, dict[str, Any]] = {"required": {}}
    for section in SECTIONS:
        if section == "hidden":
            continue
        for name, spec in (inputs.get(section) or {}).items():
            sections.setdefault(section, {})[name] = v3_input(spec)
    hidden = dict(inputs.get("hidden") or {})
    if output_node:
        hidden = {**hidden, **{k: v for k, v in OUTPUT_NODE_HIDDEN.items() if k not in hidden}}
    if hidden:
        sections["hidden"] = {name: [_hidden_value(value)] for name, value in hidden.items()}
    return sections


def _hidden_value(value: Any) -> Any:
    if isinstance(value, list | tuple) and len(value) == 1:
        return value[0]
    return value


def output_matchtypes(definition: NodeDef, inputs: InputTypes) -> list[str | None] | None:
    """The template id of each match-type output (None when the node has none)."""
    if not any(o.type == MATCH_TYPE for o in definition.outputs):
        return None
    if any(o.template_id is not None for o in definition.outputs):  # declared per output
        return [o.template_id if o.type == MATCH_TYPE else None for o in definition.outputs]
    templates = {
        spec[1]["template"]["template_id"]
        for section in ("required", "optional")
        for spec in (inputs.get(section) or {}).values()
        if spec[0] == MATCH_TYPE
        and len(spec) > 1
        and isinstance(spec[1], Mapping)
        and isinstance(spec[1].get("template"), Mapping)
    }
    template = templates.pop() if len(templates) == 1 else None
    return [template if o.type == MATCH_TYPE else None for o in definition.outputs]


def v3_entry(definition: NodeDef, inputs: InputTypes) -> dict[str, Any]:
    """The whole ``/object_info`` entry, keys in the order ComfyUI 0.8 sends them."""
    sections = v3_inputs(inputs, definition.output_node)
    return {
        "input": sections,
        "input_order": {section: list(values) for section, values in sections.items()},
        "output": [o.type for o in definition.outputs],
        "output_is_list": [o.is_list for o in definition.outputs],
        "output_name": [o.name for o in definition.outputs],
        "output_tooltips": [o.tooltip or None for o in definition.outputs],
        "output_matchtypes": output_matchtypes(definition, inputs),
        "name": definition.class_type,
        "display_name": definition.display_name,
        "description": definition.description,
        "python_module": definition.python_module,
        "category": definition.category,
        "output_node": definition.output_node,
        "deprecated": definition.deprecated,
        "experimental": definition.experimental,
        "api_node": bool(definition.api_node),
    }
