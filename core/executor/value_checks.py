"""Checks of one input value: ComfyUI's link type rule, constant coercion and ranges.

Each returns errors in ComfyUI's validation error shape (``type``, ``message``,
``details``, ``extra_info``); :mod:`loom.executor.validate` runs them over a prompt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

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
