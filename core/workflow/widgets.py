"""Which inputs of a node type are widgets, and how ``widgets_values`` maps onto them.

The frontend creates one widget per widget-typed input, walking ``required`` then
``optional`` in declaration order (section 7.3). Some widgets bring UI-only companions
that also take a slot in ``widgets_values`` but are never sent to the API:

* ``control_after_generate`` after seeds: INT inputs with the option set, or, when the
  option is absent, INT inputs named ``seed`` / ``noise_seed`` (frontend ``useIntWidget``);
  an explicit ``control_after_generate: False`` turns it off.
* combos with ``control_after_generate`` get the control plus a ``control_filter_list``
  string (frontend ``addValueControlWidgets``).
* one upload button (``image_upload`` and friends) after the last ``required`` input,
  when a required combo has the option: the frontend's upload extensions add an
  ``upload`` input at the end of ``required`` before the widgets are made (checked against
  frontend 1.35.9: LoadImageMask saves ``[image, channel, upload]``).

A V3 DynamicCombo's chosen option brings its own widgets, saved right after the combo's
value (``["scale dimensions", 512, 512, "center", "area"]``), so where a later widget sits
depends on the value saved: :class:`ComboBranch` reads them with a cursor. Autogrow slots
are sockets and take no widget. A DynamicSlot is a socket too; once connected, its inputs'
widgets appear where it sits (:class:`SlotBranch`), so the layout also depends on which
inputs are linked.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from loom.nodes.dynamic import DYNAMIC_COMBO, DYNAMIC_SLOT
from loom.nodes.spec import NodeDef
from loom.registry import Registry

log = logging.getLogger(__name__)

SCALAR_WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN"})
#: Widget-typed inputs whose widget is not a scalar (WebcamCapture's captured file name).
OTHER_WIDGET_TYPES = frozenset({"WEBCAM"})
SEED_NAMES = frozenset({"seed", "noise_seed"})
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
_FALLBACK_DEFAULTS: dict[str, Any] = {"INT": 0, "FLOAT": 0, "STRING": "", "BOOLEAN": False}


class Widget:
    """One real widget: its name and the value used when ``widgets_values`` lacks one."""

    __slots__ = ("default", "name")

    def __init__(self, name: str, default: Any) -> None:
        self.name = name
        self.default = default


class ComboBranch:
    """A DynamicCombo's widget, followed by the widgets of the option its value chose."""

    __slots__ = ("branches", "widget")

    def __init__(self, widget: Widget, branches: dict[Any, list[LayoutSlot]]) -> None:
        self.widget = widget
        self.branches = branches

    def names(self) -> set[str]:
        """Its own name and those of every option's widgets."""
        found = {self.widget.name}
        for slots in self.branches.values():
            found |= _names(slots)
        return found


class SlotBranch:
    """A DynamicSlot: no widget of its own; its inputs' widgets while it is connected."""

    __slots__ = ("name", "slots")

    def __init__(self, name: str, slots: list[LayoutSlot]) -> None:
        self.name = name
        self.slots = slots


LayoutSlot = Widget | ComboBranch | SlotBranch | None


def _names(slots: list[LayoutSlot]) -> set[str]:
    found: set[str] = set()
    for slot in slots:
        if isinstance(slot, ComboBranch):
            found |= slot.names()
        elif isinstance(slot, SlotBranch):
            found |= _names(slot.slots)
        elif slot is not None:
            found.add(slot.name)
    return found


class WidgetLayout:
    """The widgets of one node type, and the ``widgets_values`` index of each.

    ``slots`` has one entry per ``widgets_values`` position: a :class:`Widget`, ``None``
    for a UI-only companion (seed control, combo filter, upload button), a
    :class:`ComboBranch` (its value, then its chosen option's widgets), or a
    :class:`SlotBranch` (no position of its own; its inputs' widgets when connected).
    """

    __slots__ = ("names", "slots")

    def __init__(self, slots: list[LayoutSlot]) -> None:
        self.slots = slots
        self.names = frozenset(_names(slots))

    def values(
        self, widgets_values: Any, linked: frozenset[str] | set[str] = frozenset()
    ) -> dict[str, Any]:
        """Each widget's saved value (or its default) by name, in widget order.

        ``widgets_values`` may be a list (the usual form), a dict keyed by widget name
        (some custom nodes), or missing. ``linked`` names the node's connected inputs
        (a DynamicSlot's widgets exist only while it is connected).
        """
        result: dict[str, Any] = {}
        if isinstance(widgets_values, dict):
            _by_name(self.slots, widgets_values, result, linked)
            return result
        saved = widgets_values if isinstance(widgets_values, list) else []
        _by_position(self.slots, saved, 0, result, linked)
        return result


def _by_name(
    slots: list[LayoutSlot],
    saved: Mapping[str, Any],
    result: dict[str, Any],
    linked: frozenset[str] | set[str],
) -> None:
    for slot in slots:
        if isinstance(slot, SlotBranch):
            if slot.name in linked:
                _by_name(slot.slots, saved, result, linked)
        elif isinstance(slot, ComboBranch):
            chosen = result[slot.widget.name] = saved.get(slot.widget.name, slot.widget.default)
            _by_name(slot.branches.get(chosen, []), saved, result, linked)
        elif slot is not None:
            result[slot.name] = saved.get(slot.name, slot.default)


def _by_position(
    slots: list[LayoutSlot],
    saved: list[Any],
    index: int,
    result: dict[str, Any],
    linked: frozenset[str] | set[str],
) -> int:
    for slot in slots:
        if isinstance(slot, SlotBranch):
            if slot.name in linked:
                index = _by_position(slot.slots, saved, index, result, linked)
            continue
        widget = slot.widget if isinstance(slot, ComboBranch) else slot
        if widget is not None:
            result[widget.name] = saved[index] if index < len(saved) else widget.default
        index += 1
        if isinstance(slot, ComboBranch):
            index = _by_position(
                slot.branches.get(result[slot.widget.name], []), saved, index, result, linked
            )
    return index


def _spec_parts(spec: Any) -> tuple[Any, Mapping[str, Any]]:
    if isinstance(spec, (list, tuple)) and spec:
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
        return spec[0], options
    if isinstance(spec, str):  # v1 hidden form "prompt": "PROMPT"
        return spec, {}
    return None, {}


def _combo_options(type_: Any, options: Mapping[str, Any]) -> list[Any] | None:
    if isinstance(type_, (list, tuple)):
        return list(type_)
    if type_ == "COMBO":
        values = options.get("options")
        return list(values) if isinstance(values, (list, tuple)) else []
    return None


def _default(type_: Any, options: Mapping[str, Any], combo: list[Any] | None) -> Any:
    if "default" in options:
        return options["default"]
    if combo is not None:
        return combo[0] if combo else None
    return _FALLBACK_DEFAULTS.get(type_) if isinstance(type_, str) else None


def _input_slots(name: str, spec: Any) -> list[LayoutSlot]:
    """The ``widgets_values`` slots one input takes (empty for sockets)."""
    type_, options = _spec_parts(spec)
    if type_ == DYNAMIC_COMBO:
        return [_combo_branch(name, options)]
    if type_ == DYNAMIC_SLOT:
        return [SlotBranch(name, _nested_slots(name, options.get("inputs") or {}))]
    if options.get("forceInput"):
        return []
    combo = _combo_options(type_, options)
    if combo is None and type_ not in SCALAR_WIDGET_TYPES and type_ not in OTHER_WIDGET_TYPES:
        return []
    slots: list[Widget | None] = [Widget(name, _default(type_, options, combo))]
    control = options.get("control_after_generate")
    if combo is not None:
        if control:
            slots += [None, None]  # control mode + control_filter_list
    elif type_ == "INT":
        if control is None:
            control = name in SEED_NAMES
        if control:
            slots.append(None)
    return slots


def _is_upload_combo(spec: Any) -> bool:
    type_, options = _spec_parts(spec)
    if _combo_options(type_, options) is None:
        return False
    return any(options.get(key) is True for key in UPLOAD_OPTIONS)


def _combo_branch(name: str, options: Mapping[str, Any]) -> ComboBranch:
    choices = [c for c in options.get("options") or () if isinstance(c, Mapping)]
    default = options.get("default", choices[0].get("key") if choices else None)
    branches: dict[Any, list[LayoutSlot]] = {}
    for choice in choices:
        branches[choice.get("key")] = _nested_slots(name, choice.get("inputs") or {})
    return ComboBranch(Widget(name, default), branches)


def _nested_slots(name: str, inputs: Mapping[str, Any]) -> list[LayoutSlot]:
    """The widget slots of inputs nested in dynamic input ``name``, named ``name.<input>``."""
    slots: list[LayoutSlot] = []
    for section in ("required", "optional"):
        nested = inputs.get(section) if isinstance(inputs, Mapping) else None
        for inner, inner_spec in (nested or {}).items():
            slots.extend(_input_slots(f"{name}.{inner}", inner_spec))
    return slots


def layout_for(definition: NodeDef, registry: Registry) -> WidgetLayout:
    """The widget layout of a node type, from its live ``INPUT_TYPES`` (hidden never counts)."""
    input_types = definition.input_types(registry) or {}
    slots: list[LayoutSlot] = []
    for section in ("required", "optional"):
        inputs = input_types.get(section)
        if isinstance(inputs, Mapping):
            for name, spec in inputs.items():
                slots.extend(_input_slots(str(name), spec))
            if section == "required" and any(map(_is_upload_combo, inputs.values())):
                slots.append(None)  # the upload button
    return WidgetLayout(slots)


class LayoutCache:
    """Widget layouts per class_type for one conversion (``INPUT_TYPES`` is called once)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._layouts: dict[str, WidgetLayout] = {}

    def get(self, definition: NodeDef) -> WidgetLayout:
        """The layout of ``definition``, computed on first use."""
        layout = self._layouts.get(definition.class_type)
        if layout is None:
            layout = layout_for(definition, self.registry)
            self._layouts[definition.class_type] = layout
        return layout
