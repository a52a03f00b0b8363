"""Prompt validation with ComfyUI's error JSON.

Reproduces ComfyUI 0.8's ``validate_prompt``: unknown or missing ``class_type`` rejects
the whole prompt (``invalid_prompt``); every output node is validated with its whole
upstream; invalid outputs are dropped and reported in ``node_errors``; the prompt is
rejected only when no output is valid. Constants are coerced (``"8"`` -> 8 for an INT) and
written back into the returned copy of the prompt.

Unlike ComfyUI nothing here recurses (a 10,000-node chain validates), and dependency
cycles are reported at validation time (type ``dependency_cycle``), so nothing runs.

This module walks the prompt; the checks of one input (link, coercion, range) live in
:mod:`loom.executor.value_checks`. A node's V3 dynamic inputs (Autogrow slots, a
DynamicCombo's chosen option's inputs) are expanded first (:mod:`loom.nodes.dynamic`), so
each is checked like a plain input under its dotted name (``images.image1``).
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs

from loom.errors import PromptValidationError
from loom.executor.graph import (
    Prompt,
    reachable,
    topological_order,
    upstream_ids,
)
from loom.executor.reporting import type_name
from loom.executor.unknown_nodes import unknown_node_types_error
from loom.executor.value_checks import (
    MATCH_TYPE,
    check_link,
    check_range,
    coerce,
    error,
    type_matches,
)
from loom.nodes.dynamic import finalize_inputs, has_dynamic, nest_values
from loom.nodes.spec import InputTypes, NodeDef, NodeEnvironment

if TYPE_CHECKING:
    from loom.registry import Registry
__all__ = [
    "MATCH_TYPE",
    "ValidatedPrompt",
    "type_matches",
    "unknown_node_types_error",
    "validate_prompt",
]


@attrs.frozen
class ValidatedPrompt:
    """A prompt that passed: the coerced copy, the outputs that will run, and the errors
    of the outputs that were dropped (ComfyUI returns those with a 200)."""

    prompt: Prompt
    outputs: list[str]
    node_errors: dict[str, Any]


def _reject(
    kind: str, message: str, details: str = "", node_errors: dict | None = None
) -> PromptValidationError:
    return PromptValidationError(error(kind, message, details), node_errors or {})


class _Checker:
    """Validates nodes one at a time; caches INPUT_TYPES per class for the pass."""

    def __init__(self, prompt: Prompt, registry: Registry, env: NodeEnvironment) -> None:
        self.prompt = prompt
        self.registry = registry
        self.env = env
        self._input_types: dict[str, InputTypes] = {}
        self._dynamic: dict[str, bool] = {}

    def input_types(self, definition: NodeDef) -> InputTypes:
        cached = self._input_types.get(definition.class_type)
        if cached is None:
            cached = definition.input_types(self.env)
            self._input_types[definition.class_type] = cached
        return cached

    def _has_dynamic(self, definition: NodeDef) -> bool:
        found = self._dynamic.get(definition.class_type)
        if found is None:
            found = self._dynamic[definition.class_type] = has_dynamic(self.input_types(definition))
        return found

    def output_type(self, source_id: str, slot: int) -> Any:
        definition = self.registry.get_node(self.prompt[source_id]["class_type"])
        assert definition is not None
        if not 0 <= slot < len(definition.outputs):
            raise IndexError(
                f"node {source_id} ({definition.class_type}) has {len(definition.outputs)} outputs, "
                f"no output {slot}"
            )
        return definition.outputs[slot].type

    def node_errors(self, node_id: str) -> list[dict[str, Any]]:
        """Problems of this node's own inputs (not of its upstream)."""
        node = self.prompt[node_id]
        definition = self.registry.get_node(node["class_type"])
        assert definition is not None
        try:
            return self._check_inputs(node_id, node, definition)
        except Exception as exc:  # INPUT_TYPES or VALIDATE_INPUTS of a custom node raised
            return [
                error(
                    "exception_during_validation",
                    "Exception when validating node",
                    str(exc),
                    exception_type=type_name(exc),
                    traceback=traceback.format_tb(exc.__traceback__),
                )
            ]

    def _check_inputs(
        self, node_id: str, node: dict[str, Any], definition: NodeDef
    ) -> list[dict[str, Any]]:
        inputs = node["inputs"]
        spec = self.input_types(definition)
        finalized = None
        if self._has_dynamic(definition):  # Autogrow slots / DynamicCombo option inputs
            finalized = finalize_inputs(spec, inputs)
            spec = {"required": finalized.required, "optional": finalized.optional}
        required = spec.get("required") or {}
        declared = {**required, **(spec.get("optional") or {})}
        skip = definition.validate_args
        errors: list[dict[str, Any]] = []
        constants: dict[str, Any] = {}
        for name, config in declared.items():
            config = list(config) if isinstance(config, (list, tuple)) else [config]
            expected = config[0]
            options = config[1] if len(config) > 1 and isinstance(config[1], dict) else {}
            if name not in inputs:
                if name in required:
                    # ComfyUI names a V3 node's missing input by its last part ("image1")
                    details = name.rsplit(".", 1)[-1] if definition.v3 else name
                    errors.append(
                        error(
                            "required_input_missing",
                            "Required input is missing",
                            details,
                            input_name=name,
                        )
                    )
                continue
            value = inputs[name]
            if isinstance(value, list) and not isinstance(value, str):
                errors.extend(
                    check_link(
                        name,
                        value,
                        config,
                        expected,
                        skip_type="input_types" in skip,
                        prompt=self.prompt,
                        output_type=self.output_type,
                    )
                )
                continue
            if isinstance(value, dict) and "__value__" in value:
                value = value["__value__"]
            problem, value = coerce(name, value, expected, config)
            if problem is not None:
                errors.append(problem)
                continue
            inputs[name] = value
            constants[name] = value
            if name not in skip:
                problems = check_range(name, value, expected, options, config)
                if problems and isinstance(expected, list):
                    self._name_searched_folders(definition, name, problems, empty=not expected)
                errors.extend(problems)
        if definition.has_validate and not errors:
            if finalized is not None:  # validate_inputs sees the values grouped, as run does
                constants = nest_values(constants, finalized)
            errors.extend(self._custom_validation(definition, constants, skip))
        if not errors and self.registry.node_problems is not None:
            errors.extend(self._plugin_problems(node_id))
        return errors

    def _name_searched_folders(
        self, definition: NodeDef, name: str, problems: list[dict[str, Any]], *, empty: bool
    ) -> None:
        """A model file not in its combo: ``extra_info.searched_folders`` lists the directories
        read; an empty combo also says so in ``details`` (otherwise ComfyUI's wording stays)."""
        source_of = getattr(definition.impl, "combo_source", None)
        searched = getattr(source_of(name) if source_of else None, "searched", None)
        if searched is None:
            return
        folders = [str(path) for path in searched(self.env.folders)]
        for problem in problems:
            if problem["type"] == "value_not_in_list":
                if empty:
                    where = ", ".join(folders) or "no model folder is configured for it"
                    problem["details"] += f" (no model files found in: {where})"
                problem["extra_info"]["searched_folders"] = folders

    def _plugin_problems(self, node_id: str) -> list[dict[str, Any]]:
        """The ``node_problems`` hook's answers (a tokenizer a text encoder will not find)."""
        answers = self.registry.node_problems(node_id=node_id, prompt=self.prompt, env=self.env)
        return [
            error("missing_resource", "A file the node needs is missing", problem)
            for answer in answers
            for problem in answer or ()
        ]

    def _custom_validation(
        self, definition: NodeDef, constants: dict[str, Any], accepted: frozenset[str]
    ) -> list[dict[str, Any]]:
        arguments = dict(constants)
        if "input_types" in accepted:
            arguments["input_types"] = {}
        result = definition.impl.validate(None, arguments, self.env)
        if result is True:
            return []
        last = next(reversed(arguments), "") if arguments else ""
        details = f"{last}" if result is False else f"{last} - {result}"
        return [
            error(
                "custom_validation_failed",
                "Custom validation failed for node",
                details,
                input_name=last,
            )
        ]


def _check_shape(prompt: Any, registry: Registry) -> Prompt:
    if not isinstance(prompt, dict):
        raise _reject(
            "invalid_prompt",
            "Prompt must be a JSON object of node id -> node",
            f"got {type(prompt).__name__}",
        )
    for raw_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            rejection = _reject(
                "invalid_prompt",
                "Cannot execute because a node is missing the class_type property.",
                f"Node ID '#{raw_id}'",
            )
            if isinstance(prompt.get("nodes"), list) and "links" in prompt:
                rejection.error["extra_info"]["hint"] = (
                    "this is a UI-format workflow (it has 'nodes' and 'links'); a prompt is the "
                    "API format: export it from ComfyUI with 'Export (API)', or convert it with "
                    "`loom convert`"
                )
            raise rejection
    unknown = unknown_node_types_error(
        {str(node_id): node["class_type"] for node_id, node in prompt.items()}, registry
    )
    if unknown is not None:
        raise unknown
    checked: Prompt = {}
    for raw_id, node in prompt.items():
        node_id = str(raw_id)
        class_type = node["class_type"]
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            raise _reject(
                "invalid_prompt",
                f"Node {node_id} ({class_type}): 'inputs' must be an object",
                f"Node ID '#{node_id}'",
            )
        checked[node_id] = {**node, "inputs": dict(inputs)}
    return checked


def validate_prompt(
    prompt: Any,
    registry: Registry,
    partial_targets: Iterable[str] | None = None,
    env: NodeEnvironment | None = None,
) -> ValidatedPrompt:
    """Validate an API prompt; raise :class:`PromptValidationError` when nothing can run.

    ``env`` (the runtime's) feeds live combos and ``validate_inputs``; without it they see
    the registry alone.
    """
    checked = _check_shape(prompt, registry)
    targets = None if partial_targets is None else {str(t) for t in partial_targets}
    outputs = [
        node_id
        for node_id, node in checked.items()
        if registry.nodes[node["class_type"]].output_node
        and (targets is None or node_id in targets)
    ]
    if not outputs:
        raise _reject("prompt_no_outputs", "Prompt has no outputs")

    nodes = reachable(checked, outputs)
    ordered, cyclic = topological_order(checked, nodes)
    checker = _Checker(checked, registry, env or NodeEnvironment(registry=registry))
    own_errors: dict[str, list[dict[str, Any]]] = {}
    valid: dict[str, bool] = {}
    for node_id in ordered:  # upstream first, so validity propagates in one pass
        own_errors[node_id] = checker.node_errors(node_id)
        upstream_ok = all(
            valid.get(s, False) for s in upstream_ids(checked[node_id]) if s in checked
        )
        valid[node_id] = not own_errors[node_id] and upstream_ok
    for node_id in cyclic:
        own_errors[node_id] = [
            error(
                "dependency_cycle",
                "Dependency cycle detected",
                f"node {node_id} ({checked[node_id]['class_type']}) depends on itself "
                f"through nodes {', '.join(cyclic)}",
            )
        ]

    good: list[str] = []
    output_errors: list[str] = []
    node_errors: dict[str, Any] = {}
    seen: dict[str, None] = {}
    for output_id in outputs:
        for node_id in reachable(checked, [output_id], known=seen):
            seen[node_id] = None
        if valid.get(output_id, False):
            good.append(output_id)
            continue
        for problem in own_errors.get(output_id, []):
            output_errors.append(f"{problem['message']}: {problem['details']}")
        # ComfyUI appends each failing output to every failing node validated so far.
        for node_id in seen:
            if own_errors.get(node_id):
                entry = node_errors.setdefault(
                    node_id,
                    {
                        "errors": own_errors[node_id],
                        "dependent_outputs": [],
                        "class_type": checked[node_id]["class_type"],
                    },
                )
                entry["dependent_outputs"].append(output_id)
    if not good:
        raise _reject(
            "prompt_outputs_failed_validation",
            "Prompt outputs failed validation",
            "\n".join(output_errors),
            node_errors,
        )
    return ValidatedPrompt(checked, good, node_errors)
