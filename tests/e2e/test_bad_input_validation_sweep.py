"""Every node type Loom registers, given the inputs users get wrong, is answered with
ComfyUI's ``node_errors`` naming the node and the input, and nothing else in the prompt is
touched (comfy-compat.md section 2.1).

Each case is one prompt: a valid ``EmptyImage -> PreviewImage`` chain beside the swept node
(linked to ``PreviewAny`` when it is not an output node), its widgets at their defaults, its
linked inputs fed by some node producing their type, and exactly one thing wrong.
"""

from __future__ import annotations

import collections
import copy
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from sweep_inputs import NUMBER_TYPES, SINK, SINK_INPUT, InputFact, input_facts, producers

from loom.errors import PromptValidationError
from loom.executor.value_checks import type_matches

TARGET = "10"
VALID_CHAIN = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
}


@attrs.frozen
class BadCase:
    """One wrong input: what is put there and the error type ComfyUI answers with."""

    input_name: str
    value: Any
    expected: str
    #: Set to drop the input instead of giving it ``value``.
    missing: bool = False


def bad_cases(facts: list[InputFact], definition, producing) -> Iterator[BadCase]:
    skip_range = definition.validate_args
    for fact in facts:
        if fact.is_dynamic:
            continue
        if fact.required:
            yield BadCase(fact.name, None, "required_input_missing", missing=True)
        if fact.type in NUMBER_TYPES and fact.name not in skip_range:
            yield BadCase(fact.name, "not a number", "invalid_input_type")
            yield BadCase(fact.name, [1, 2, 3], "bad_linked_input")
            low, high = fact.options.get("min"), fact.options.get("max")
            if isinstance(low, (int, float)):
                yield BadCase(fact.name, low - 1, "value_smaller_than_min")
            if isinstance(high, (int, float)) and high < 2**62:
                yield BadCase(fact.name, high + 1, "value_bigger_than_max")
        elif fact.is_combo and fact.name not in skip_range:
            yield BadCase(fact.name, "no such choice \u2603", "value_not_in_list")
        elif not fact.is_widget:
            if "input_types" not in skip_range:
                wrong = next((t for t in sorted(producing) if not type_matches(t, fact.type)), None)
                if wrong is not None:
                    yield BadCase(fact.name, list(producing[wrong]), "return_type_mismatch")
            yield BadCase(fact.name, ["404", 0], "exception_during_inner_validation")
            if fact.type in producing:
                source, _ = producing[fact.type]
                yield BadCase(fact.name, [source, 99], "exception_during_inner_validation")


def base_prompt(class_type: str, definition, facts, producing) -> dict[str, Any]:
    """The swept node with default widgets and typed links, plus the valid chain."""
    prompt = copy.deepcopy(VALID_CHAIN)
    inputs: dict[str, Any] = {}
    for fact in facts:
        if fact.is_dynamic or not fact.required:
            continue
        if fact.is_widget:
            inputs[fact.name] = fact.default()
        elif isinstance(fact.type, str) and fact.type in producing:
            source, slot = producing[fact.type]
            inputs[fact.name] = [source, slot]
    prompt[TARGET] = {"class_type": class_type, "inputs": inputs}
    # Every producer a link could name is in the prompt under its class name as id.
    for source, _ in producing.values():
        prompt.setdefault(source, {"class_type": source, "inputs": {}})
    if not definition.output_node:
        prompt["99"] = {"class_type": SINK, "inputs": {SINK_INPUT: [TARGET, 0]}}
    return prompt


def own_errors(executor, prompt) -> tuple[list[dict[str, Any]], Any]:
    """The swept node's errors and the validated prompt (None when all outputs failed)."""
    try:
        validated = executor.validate(prompt)
    except PromptValidationError as rejected:
        return rejected.node_errors.get(TARGET, {}).get("errors", []), None
    return validated.node_errors.get(TARGET, {}).get("errors", []), validated


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    from sweep_inputs import sweep_runtime

    return sweep_runtime(tmp_path_factory.mktemp("validation-sweep"))


def test_every_node_answers_bad_input_with_comfyui_node_errors(runtime):
    executor = runtime.executor
    producing = producers(runtime.registry)
    swept = cases = 0
    kinds: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    for class_type, definition in sorted(runtime.registry.nodes.items()):
        if not definition.outputs and not definition.output_node:
            continue
        facts = input_facts(definition, executor.environment)
        base = base_prompt(class_type, definition, facts, producing)
        swept += 1
        for case in bad_cases(facts, definition, producing):
            cases += 1
            kinds[case.expected] += 1
            prompt = copy.deepcopy(base)
            inputs = prompt[TARGET]["inputs"]
            if case.missing:
                inputs.pop(case.input_name, None)
            else:
                inputs[case.input_name] = case.value
            label = f"{class_type}.{case.input_name}={case.value!r}"
            try:
                errors, validated = own_errors(executor, prompt)
            except Exception as exc:  # the finding this sweep exists for
                failures.append(f"{label}: validation raised {type(exc).__name__}: {exc}")
                continue
            named = [
                e
                for e in errors
                if e["type"] == case.expected
                and e["extra_info"].get("input_name") == case.input_name
            ]
            if not named:
                failures.append(f"{label}: wanted {case.expected}, got {errors}")
            if any(e["type"] == "exception_during_validation" for e in errors):
                failures.append(f"{label}: a check crashed: {errors}")
            if validated is None or "2" not in validated.outputs:
                failures.append(f"{label}: the valid EmptyImage -> PreviewImage chain was dropped")
            elif validated.prompt["1"] != VALID_CHAIN["1"] or {"1", "2"} & set(
                validated.node_errors
            ):
                failures.append(f"{label}: the valid chain was changed or blamed")
    print(f"validation sweep: {swept} nodes, {cases} cases, {dict(kinds)}")
    assert set(kinds) == {
        "required_input_missing",
        "invalid_input_type",
        "bad_linked_input",
        "value_smaller_than_min",
        "value_bigger_than_max",
        "value_not_in_list",
        "return_type_mismatch",
        "exception_during_inner_validation",
    }, kinds
    assert swept > 250 and cases > 1500, (swept, cases)
    assert not failures, f"{len(failures)} of {cases} cases:\n" + "\n".join(failures[:40])
