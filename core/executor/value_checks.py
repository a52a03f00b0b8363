"""Checks of one input of one node: its link (well formed, type accepted), or its constant
(coerced to the input's type, within min/max, among the combo's choices).

Each returns errors in ComfyUI's validation error shape (``type``, ``message``,
``details``, ``extra_info``); :mod:`loom.executor.validate` runs them over a prompt.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from loom.executor.graph import is_link, link_source

MAX_LISTED_OPTIONS = 20


def error(kind: str, message: str, details: str = "", **extra: Any) -> dict[str, Any]:
    """One validation error in ComfyUI's shape."""
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


#: ComfyUI's V3 ``MatchType`` socket type
MATCH_TYPE = "COMFY_MATCHTYPE_V3"


def type_matches(received: Any, expected: Any) -> bool:
    """ComfyUI's link type rule: equal, ``*`` or a V3 match type on either side, or
    intersecting unions."""
    if isinstance(expected, list) or expected == "COMBO":
        return received == "COMBO" or isinstance(received, list) or received == "*"
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    if received == expected or received == "*" or expected == "*":
        return True
    if MATCH_TYPE in (received, expected):  # the frontend matches these, ComfyUI accepts any
        return True
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in expected.split(",")})


_CONVERTERS = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


def coerce(name: str, value: Any, expected: Any, config: list[Any]) -> tuple[dict | None, Any]:
    """A widget constant converted to its type (``"8"`` -> 8 for an INT), or the error."""
    if not isinstance(expected, str) or expected not in _CONVERTERS:
        return None, value
    try:
        if expected == "INT" and isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        if (
            expected == "FLOAT"
            and isinstance(value, str)
            and value.strip().lower() in ("nan", "inf", "-inf", "infinity", "-infinity")
        ):
            raise ValueError(f"{value!r} is not a finite number")
        if expected in ("INT", "FLOAT") and isinstance(value, (dict, list)):
            raise TypeError(f"expected a number, got {type(value).__name__}")
        converted = _CONVERTERS[expected](value)
        if expected == "FLOAT" and math.isnan(converted):
            raise ValueError("NaN is not a valid FLOAT value")
    except (TypeError, ValueError, OverflowError) as exc:
        return error(
            "invalid_input_type",
            f"Failed to convert an input value to a {expected} value",
            f"{name}, {value}, {exc}",
            input_name=name,
            input_config=config,
            received_value=value,
            exception_message=str(exc),
        ), value
    return None, converted


def check_range(
    name: str, value: Any, expected: Any, options: Mapping[str, Any], config: list[Any]
) -> list[dict[str, Any]]:
    """A constant outside its INT/FLOAT min/max, or not among its combo's choices."""
    errors = []
    if expected in ("INT", "FLOAT"):
        low, high = options.get("min"), options.get("max")
        if low is not None and value < low:
            errors.append(
                error(
                    "value_smaller_than_min",
                    f"Value {value} smaller than min of {low}",
                    name,
                    input_name=name,
                    input_config=config,
                    received_value=value,
                )
            )
        if high is not None and value > high:
            errors.append(
                error(
                    "value_bigger_than_max",
                    f"Value {value} bigger than max of {high}",
                    name,
                    input_name=name,
                    input_config=config,
                    received_value=value,
                )
            )
    choices = (
        expected
        if isinstance(expected, list)
        else (options.get("options") if expected == "COMBO" else None)
    )
    if isinstance(choices, (list, tuple)) and value not in choices:
        listed = (
            f"(list of length {len(choices)})"
            if len(choices) > MAX_LISTED_OPTIONS
            else str(list(choices))
        )
        shown_config = None if len(choices) > MAX_LISTED_OPTIONS else config
        errors.append(
            error(
                "value_not_in_list",
                "Value not in list",
                f"{name}: '{value}' not in {listed}",
                input_name=name,
                input_config=shown_config,
                received_value=value,
            )
        )
    return errors


def check_link(
    name: str,
    value: Any,
    config: list[Any],
    expected: Any,
    *,
    skip_type: bool,
    prompt: Mapping[str, Any],
    output_type: Callable[[str, int], Any],
) -> list[dict[str, Any]]:
    """A linked input: a well-formed ``[node_id, slot]`` to a node and output that exist,
    whose type (``output_type(node_id, slot)``) the input accepts unless ``skip_type``."""
    if not is_link(value):
        return [
            error(
                "bad_linked_input",
                "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                name,
                input_name=name,
                input_config=config,
                received_value=value,
            )
        ]
    source_id, slot = link_source(value)
    if source_id not in prompt:
        return [
            error(
                "exception_during_inner_validation",
                "Exception when validating inner node",
                f"input '{name}' links to node {source_id}, which is not in the prompt",
                input_name=name,
                input_config=config,
                exception_message=f"node {source_id} does not exist",
                exception_type="KeyError",
                traceback=[],
                linked_node=value,
            )
        ]
    try:
        received = output_type(source_id, slot)
    except IndexError as exc:
        return [
            error(
                "exception_during_inner_validation",
                "Exception when validating inner node",
                str(exc),
                input_name=name,
                input_config=config,
                exception_message=str(exc),
                exception_type="IndexError",
                traceback=[],
                linked_node=value,
            )
        ]
    if not skip_type and not type_matches(received, expected):
        shown = expected if isinstance(expected, str) else "COMBO"
        return [
            error(
                "return_type_mismatch",
                "Return type mismatch between linked nodes",
                f"{name}, received_type({received}) mismatch input_type({shown})",
                input_name=name,
                input_config=config,
                received_type=received,
                linked_node=value,
            )
        ]
    return []
