"""Validation reproduces ComfyUI 0.8's error JSON (comfy-compat.md section 2.1)."""

from __future__ import annotations

import math

import pytest

from loom.errors import PromptValidationError


def rejected(executor, prompt, **kwargs) -> PromptValidationError:
    with pytest.raises(PromptValidationError) as info:
        executor.validate(prompt, **kwargs)
    return info.value


def test_recorded_frontend_example_matches_comfyui_byte_for_byte(executor):
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 0, "height": 512, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
        "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "y"}},
    }
    error = rejected(executor, prompt)
    assert error.error == {
        "type": "prompt_outputs_failed_validation",
        "message": "Prompt outputs failed validation",
        "details": "Required input is missing: images",
        "extra_info": {},
    }
    assert error.node_errors == {
        "1": {
            "errors": [
                {
                    "type": "value_smaller_than_min",
                    "message": "Value 0 smaller than min of 1",
                    "details": "width",
                    "extra_info": {
                        "input_name": "width",
                        "input_config": [
                            "INT",
                            {"default": 512, "min": 1, "max": 16384, "step": 1},
                        ],
                        "received_value": 0,
                    },
                }
            ],
            "dependent_outputs": ["2", "3"],
            "class_type": "EmptyImage",
        },
        "3": {
            "errors": [
                {
                    "type": "required_input_missing",
                    "message": "Required input is missing",
                    "details": "images",
                    "extra_info": {"input_name": "images"},
                }
            ],
            "dependent_outputs": ["3"],
            "class_type": "SaveImage",
        },
    }


def test_missing_class_type_and_unknown_class_reject_the_whole_prompt(executor):
    error = rejected(executor, {"5": {"inputs": {}}})
    assert error.error["type"] == "invalid_prompt"
    assert (
        error.error["message"]
        == "Cannot execute because a node is missing the class_type property."
    )
    assert error.error["details"] == "Node ID '#5'"
    error = rejected(executor, {"7": {"class_type": "NoSuchNode", "inputs": {}}})
    assert error.error["message"] == "Cannot execute because node NoSuchNode does not exist."
    assert error.node_errors == {}


@pytest.mark.parametrize(
    "body", [[], "text", 3, None, {"1": "not a node"}, {"1": {"class_type": "Const", "inputs": []}}]
)
def test_malformed_shapes_are_invalid_prompt_not_crashes(executor, body):
    assert rejected(executor, body).error["type"] == "invalid_prompt"


def test_no_outputs(executor):
    error = rejected(executor, {"1": {"class_type": "Const", "inputs": {"value": 1}}})
    assert error.error == {
        "type": "prompt_no_outputs",
        "message": "Prompt has no outputs",
        "details": "",
        "extra_info": {},
    }


def _show(value_input):
    return {
        "1": {"class_type": "Const", "inputs": {"value": value_input}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }


@pytest.mark.parametrize(
    "value, kind, message",
    [
        (-5000, "value_smaller_than_min", "Value -5000 smaller than min of -1000"),
        (10**30, "value_bigger_than_max", f"Value {10**30} bigger than max of 1000"),
        ("abc", "invalid_input_type", "Failed to convert an input value to a INT value"),
        (math.nan, "invalid_input_type", "Failed to convert an input value to a INT value"),
        (
            [1, 2, 3],
            "bad_linked_input",
            "Bad linked input, must be a length-2 list of [node_id, slot_index]",
        ),
        (["9", 0], "exception_during_inner_validation", "Exception when validating inner node"),
    ],
)
def test_constant_and_link_errors(executor, value, kind, message):
    error = rejected(executor, _show(value))
    (entry,) = error.node_errors["1"]["errors"]
    assert (entry["type"], entry["message"]) == (kind, message)
    assert entry["extra_info"]["input_name"] == "value"
    assert error.node_errors["1"]["dependent_outputs"] == ["2"]


def test_invalid_number_details_name_input_value_and_reason(executor):
    (entry,) = rejected(executor, _show("abc")).node_errors["1"]["errors"]
    assert entry["details"].startswith("value, abc, invalid literal for int()")
    assert entry["extra_info"]["received_value"] == "abc"


def test_lenient_coercion_is_written_back(executor):
    for given, expected in [("8", 8), (8.7, 8), (True, 1), ({"__value__": 5}, 5)]:
        validated = executor.validate(_show(given))
        assert validated.prompt["1"]["inputs"]["value"] == expected


def test_float_nan_and_combo_and_types(executor):
    prompt = {
        "1": {"class_type": "Pick", "inputs": {"mode": "z", "scale": "nan", "flag": 1, "text": 5}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    errors = rejected(executor, prompt).node_errors["1"]["errors"]
    assert [e["type"] for e in errors] == ["value_not_in_list", "invalid_input_type"]
    assert errors[0]["details"] == "mode: 'z' not in ['a', 'b', 'c']"
    assert errors[0]["extra_info"]["input_config"] == [["a", "b", "c"]]


def test_long_combo_lists_are_summarised(registry, executor, monkeypatch):
    options = [f"opt{i}" for i in range(30)]
    cls = registry.get_node("Pick").impl.cls
    monkeypatch.setattr(
        cls, "INPUT_TYPES", classmethod(lambda cls: {"required": {"mode": (options,)}})
    )
    prompt = {
        "1": {"class_type": "Pick", "inputs": {"mode": "nope"}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    (entry,) = rejected(executor, prompt).node_errors["1"]["errors"]
    assert entry["details"] == "mode: 'nope' not in (list of length 30)"
    assert entry["extra_info"]["input_config"] is None


def test_return_type_mismatch(executor):
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 1}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
    }
    (entry,) = rejected(executor, prompt).node_errors["2"]["errors"]
    assert entry["type"] == "return_type_mismatch"
    assert entry["details"] == "image, received_type(INT) mismatch input_type(IMAGE)"
    assert entry["extra_info"]["linked_node"] == ["1", 0]


def test_link_to_missing_output_slot_names_the_node(executor):
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 1}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 3]}},
    }
    (entry,) = rejected(executor, prompt).node_errors["2"]["errors"]
    assert entry["type"] == "exception_during_inner_validation"
    assert "node 1 (Const) has 1 outputs, no output 3" in entry["details"]


def test_custom_validation(executor):
    prompt = {
        "1": {"class_type": "Checked", "inputs": {"value": 7}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    (entry,) = rejected(executor, prompt).node_errors["1"]["errors"]
    assert entry == {
        "type": "custom_validation_failed",
        "message": "Custom validation failed for node",
        "details": "value - seven is not allowed",
        "extra_info": {"input_name": "value"},
    }


def test_one_valid_output_is_enough_and_errors_come_back(executor):
    prompt = {
        **_show(1),
        "3": {"class_type": "Const", "inputs": {"value": 5000}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
    }
    validated = executor.validate(prompt)
    assert validated.outputs == ["2"]
    assert validated.node_errors["3"]["dependent_outputs"] == ["4"]


def test_cycles_are_reported_and_nothing_runs(executor, calls):
    prompt = {
        "1": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": 1}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    error = rejected(executor, prompt)
    assert error.node_errors["1"]["errors"][0]["type"] == "dependency_cycle"
    assert error.node_errors["2"]["errors"][0]["type"] == "dependency_cycle"
    assert "3" not in error.node_errors
    assert calls == []


def test_partial_execution_targets(executor):
    prompt = {**_show(1), "3": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    assert executor.validate(prompt, partial_targets=["3"]).outputs == ["3"]
    assert rejected(executor, prompt, partial_targets=["1"]).error["type"] == "prompt_no_outputs"


def test_deep_chain_validates_without_recursion(executor):
    import sys

    prompt = {"0": {"class_type": "Const", "inputs": {"value": 0}}}
    for i in range(1, 5000):
        prompt[str(i)] = {"class_type": "Add", "inputs": {"a": [str(i - 1), 0], "b": 0}}
    prompt["out"] = {"class_type": "Show", "inputs": {"value": ["4999", 0]}}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        assert executor.validate(prompt).outputs == ["out"]
    finally:
        sys.setrecursionlimit(limit)
