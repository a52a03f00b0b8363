"""Which inputs of a node type are widgets, and how ``widgets_values`` maps onto them.

The frontend creates one widget per widget-typed input, walking ``required`` then
``optional`` in declaration order (section 7.3). Some widgets bring UI-only companions
that also take a slot in ``widgets_values`` but are never sent to the API:

* ``control_after_generate`` after seeds: INT inputs with the option set, or, when the
  option is absent, INT inputs named ``seed`` / ``noise_seed`` (frontend ``useIntWidget``);
  an explicit ``control_after_generate: False`` turns it off.
* combos with ``control_after_generate`` get the control plus a ``control_filter_list``
  string (frontend ``addValueControlWidgets``).
* upload buttons (``image_upload`` and friends) after the combo they fill.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from loom.nodes.spec import NodeDef
from loom.registry import Registry

log = logging.getLogger(__name__)

SCALAR_WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN"})
SEED_NAMES = frozenset({"seed", "noise_seed"})
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
_FALLBACK_DEFAULTS: dict[str, Any] = {"INT": 0, "FLOAT": 0, "STRING": "", "BOOLEAN": False}


class Widget:
    """One real widget: its name and the value used when ``widgets_values`` lacks one."""

    __slots__ = ("default", "name")

    def __init__(self, name: str, default: Any) -> None:
        self.name = name
        self.default = default


class WidgetLayout:
    """The widgets of one node type, and the ``widgets_values`` index of each.

    ``slots`` has one entry per ``widgets_values`` position: a :class:`Widget`, or ``None``
    for a UI-only companion (seed control, combo filter, upload button).
    """

    __slots__ = ("names", "slots")

    def __init__(self, slots: list[Widget | None]) -> None:
        self.slots = slots
        self.names = frozenset(w.name for w in slots if w is not None)

    def values(self, widgets_values: Any) -> dict[str, Any]:
        """Each widget's saved value (or its default) by name, in widget order.

        ``widgets_values`` may be a list (the usual form), a dict keyed by widget name
        (some custom nodes), or missing.
        """
        result: dict[str, Any] = {}
        if isinstance(widgets_values, dict):
            for widget in self.slots:
                if widget is not None:
                    result[widget.name] = widgets_values.get(widget.name, widget.default)
            return result
        saved = widgets_values if isinstance(widgets_values, list) else []
        count = len(saved)
        for index, widget in enumerate(self.slots):
            if widget is not None:
                result[widget.name] = saved[index] if index < count else widget.default
        return result


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


def _input_slots(name: str, spec: Any) -> list[Widget | None]:
    """The ``widgets_values`` slots one input takes (empty for sockets)."""
    type_, options = _spec_parts(spec)
    if options.get("forceInput"):
        return []
    combo = _combo_options(type_, options)
    if combo is None and type_ not in SCALAR_WIDGET_TYPES:
        return []
    slots: list[Widget | None] = [Widget(name, _default(type_, options, combo))]
    control = options.get("control_after_generate")
    if combo is not None:
        if control:
            slots += [None, None]  # control mode + control_filter_list
        if any(options.get(key) for key in UPLOAD_OPTIONS):
            slots.append(None)
    elif type_ == "INT":
        if control is None:
            control = name in SEED_NAMES
        if control:
            slots.append(None)
    return slots


def layout_for(definition: NodeDef, registry: Registry) -> WidgetLayout:
    """The widget layout of a node type, from its live ``INPUT_TYPES`` (hidden never counts)."""
    input_types = definition.input_types(registry) or {}
    slots: list[Widget | None] = []
    for section in ("required", "optional"):
        inputs = input_types.get(section)
        if isinstance(inputs, Mapping):
            for name, spec in inputs.items():
                slots.extend(_input_slots(str(name), spec))
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
