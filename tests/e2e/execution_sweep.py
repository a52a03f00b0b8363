"""The execution sweep: every node whose inputs can be made synthetically runs through the
real executor with the edge cases users hit, and each run's outcome is recorded.

Tensors reach the swept node through test source nodes (``SweepSourceIMAGE`` ...) that
return a value stored under their ``key`` widget; a value of another type (NOISE, SAMPLER,
LATENT_OPERATION...) comes from a real node that makes it from widgets alone. An outcome is ``ok``, ``rejected`` (validation answered with ``node_errors``),
``loom`` (a :class:`~loom.errors.LoomError` reported as the node's execution error) or
``crash`` (any other exception: a finding).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import torch
from sweep_inputs import NUMBER_TYPES, SINK, SINK_INPUT, InputFact, input_facts

import loom
from loom.errors import LoomError, PromptValidationError

#: Tensor-valued inputs the sweep makes; every other non-widget input excludes the node.
TENSOR_TYPES = ("IMAGE", "MASK", "LATENT", "SIGMAS", "CONDITIONING")
#: Which widget-only node makes a type, where the first by name is not the usual one.
PREFERRED_PRODUCERS = {"NOISE": "RandomNoise"}
#: Numbers not taken to their declared max: a batch of 4096 512x512 images is 12 GiB.
COUNT_NAMES = frozenset(
    {"batch_size", "amount", "length", "multiplier", "frames", "largest_size", "steps"}
)
#: Inputs that need a model file: nodes taking one are swept with the tiny SD1.5 checkpoint.
MODEL_TYPES = frozenset({"MODEL", "CLIP", "VAE", "CLIP_VISION"})
#: Synthetic conditioning is as wide as the tiny SD1.5 model's text encoder (its context).
COND_WIDTH = 32
TARGET = "10"
VALUES: dict[str, Any] = {}


def _source(type_name: str) -> type:
    def produce(self, key: str) -> tuple[Any]:
        return (VALUES[key],)

    return type(
        f"SweepSource{type_name}",
        (),
        {
            "INPUT_TYPES": classmethod(lambda cls: {"required": {"key": ("STRING", {})}}),
            "RETURN_TYPES": (type_name,),
            "FUNCTION": "produce",
            "CATEGORY": "testing",
            "produce": produce,
        },
    )


class SweepSources:
    """Test plugin: one source node per tensor type, returning ``VALUES[key]``."""

    @loom.hookimpl
    def register_nodes(self, register):
        for type_name in TENSOR_TYPES:
            register(_source(type_name), class_type=f"SweepSource{type_name}")


@attrs.frozen
class Shape:
    """The sizes one case gives the tensor inputs: the first tensor input gets ``batch``,
    the others ``other_batch``; MASKs get ``mask_hw`` when set."""

    batch: int = 1
    other_batch: int = 1
    hw: tuple[int, int] = (13, 11)
    mask_hw: tuple[int, int] | None = None
    channels: int = 3
    #: CONDITIONING tokens and width, of the first and of the other conditioning inputs.
    tokens: tuple[int, int] = (77, 77)
    widths: tuple[int, int] = (COND_WIDTH, COND_WIDTH)


def make_tensor(type_name: str, shape: Shape, first: bool, seed: int) -> Any:
    generator = torch.Generator().manual_seed(seed)
    batch = shape.batch if first else shape.other_batch
    h, w = shape.hw
    if type_name == "IMAGE":
        return torch.rand(batch, h, w, shape.channels, generator=generator)
    if type_name == "MASK":
        mh, mw = shape.mask_hw or shape.hw
        return torch.rand(batch, mh, mw, generator=generator)
    if type_name == "LATENT":
        return {"samples": torch.randn(batch, 4, h, w, generator=generator)}
    if type_name == "CONDITIONING":
        tokens, width = (
            (shape.tokens[0], shape.widths[0]) if first else (shape.tokens[1], shape.widths[1])
        )
        cond = torch.randn(batch, tokens, width, generator=generator)
        return [[cond, {"pooled_output": torch.randn(batch, 1280, generator=generator)}]]
    return torch.tensor([14.6146, 1.0, 0.0])  # two steps: samplers stay cheap


@attrs.frozen
class Case:
    """One run of a node: widget overrides and the tensor shapes."""

    label: str
    widgets: dict[str, Any] = attrs.field(factory=dict)
    shape: Shape = Shape()
    with_optional: bool = False


@attrs.frozen
class Outcome:
    class_type: str
    case: str
    kind: str
    detail: str = ""


def sweepable(facts: list[InputFact], made: Mapping[str, Producer]) -> bool:
    return all(
        fact.is_widget or fact.type in TENSOR_TYPES or fact.type in made
        for fact in facts
        if fact.required
    ) and not any(fact.is_dynamic for fact in facts if fact.required)


#: A producing node: its class, its (default) widget values and the output slot.
Producer = tuple[str, dict[str, Any], int]


def widget_producers(runtime) -> dict[str, Producer]:
    """For each type some node makes from widgets alone, their defaults valid: that node."""
    env = runtime.executor.environment
    found: dict[str, Producer] = {}
    for class_type, definition in sorted(runtime.registry.nodes.items()):
        if definition.output_node:
            continue
        facts = input_facts(definition, env)
        if not all(fact.is_widget for fact in facts if fact.required):
            continue
        inputs = {fact.name: fact.default() for fact in facts if fact.required}
        for slot, output in enumerate(definition.outputs):
            made = output.type
            if made in TENSOR_TYPES or made in found or not isinstance(made, str):
                continue
            preferred = PREFERRED_PRODUCERS.get(made)
            if preferred is not None and preferred != class_type:
                continue
            prompt = {
                "1": {"class_type": class_type, "inputs": inputs},
                "2": {"class_type": SINK, "inputs": {SINK_INPUT: ["1", slot]}},
            }
            try:
                runtime.executor.validate(prompt)
            except PromptValidationError:
                continue
            found[made] = (class_type, inputs, slot)
    return found


def cases(facts: list[InputFact], limits: bool = True) -> Iterator[Case]:
    """The edge cases of one node; ``limits``: each number at its min and at its max."""
    yield Case("defaults")
    for fact in facts if limits else ():
        if fact.type not in NUMBER_TYPES or not fact.required:
            continue
        low, high = fact.options.get("min"), fact.options.get("max")
        if isinstance(low, (int, float)):
            yield Case(f"{fact.name}=min({low})", {fact.name: low})
        if isinstance(high, (int, float)) and fact.name not in COUNT_NAMES:
            yield Case(f"{fact.name}=max({high})", {fact.name: high})
    tensors = [f for f in facts if f.type in TENSOR_TYPES and f.type != "SIGMAS"]
    conds = [f for f in tensors if f.type == "CONDITIONING"]
    if len(conds) > 1:
        yield Case("cond 77 vs 154 tokens", shape=Shape(tokens=(77, 154)), with_optional=True)
        wide = (COND_WIDTH, 2 * COND_WIDTH)
        yield Case(
            f"cond {wide[0]} vs {wide[1]} wide", shape=Shape(widths=wide), with_optional=True
        )
    if tensors:
        yield Case("1x1", shape=Shape(hw=(1, 1)), with_optional=True)
        yield Case("odd 13x11 with optional inputs", with_optional=True)
    if any(f.type == "IMAGE" for f in tensors):
        yield Case("RGBA", shape=Shape(channels=4), with_optional=True)
    if any(f.type == "MASK" for f in tensors) and len(tensors) > 1:
        yield Case("mask 5x17 vs 13x11", shape=Shape(mask_hw=(5, 17)), with_optional=True)
    if len(tensors) > 1:
        yield Case("batch 2 vs 3", shape=Shape(batch=2, other_batch=3), with_optional=True)
    strings = {f.name: "" for f in facts if f.type == "STRING" and f.required}
    if strings:
        yield Case("empty strings", strings)


def build_prompt(
    class_type: str,
    definition,
    facts: list[InputFact],
    case: Case,
    made: Mapping[str, Producer],
) -> dict:
    prompt: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    first_tensor = True
    for index, fact in enumerate(facts):
        if fact.is_dynamic or (not fact.required and not case.with_optional):
            continue
        if fact.is_widget:
            if fact.required:
                inputs[fact.name] = case.widgets.get(fact.name, fact.default())
            continue
        source = f"s{index}"
        if fact.type in TENSOR_TYPES:
            key = f"{class_type}/{case.label}/{fact.name}"
            VALUES[key] = make_tensor(fact.type, case.shape, first_tensor, seed=index)
            first_tensor = first_tensor and fact.type == "SIGMAS"
            prompt[source] = {"class_type": f"SweepSource{fact.type}", "inputs": {"key": key}}
            inputs[fact.name] = [source, 0]
        elif fact.type in made:
            producer, widgets, slot = made[fact.type]
            prompt[source] = {"class_type": producer, "inputs": dict(widgets)}
            inputs[fact.name] = [source, slot]
    prompt[TARGET] = {"class_type": class_type, "inputs": inputs}
    if not definition.output_node:
        prompt["99"] = {"class_type": SINK, "inputs": {SINK_INPUT: [TARGET, 0]}}
    return prompt


def exception_class(qualified: str) -> type | None:
    """The class ``reporting.type_name`` named (``loom.errors.NodeInputError``, ``KeyError``)."""
    module, _, name = qualified.rpartition(".")
    try:
        found: Any = importlib.import_module(module or "builtins")
        for part in name.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return found if isinstance(found, type) else None


def run_case(runtime, class_type: str, definition, facts, case: Case, made) -> Outcome:
    from loom.testing import run_prompt

    prompt = build_prompt(class_type, definition, facts, case, made)
    try:
        record = run_prompt(runtime, prompt, prompt_id=f"{class_type}/{case.label}")
    except PromptValidationError as rejected:
        return Outcome(class_type, case.label, "rejected", str(rejected))
    finally:
        VALUES.clear()
    if record.ok:
        return Outcome(class_type, case.label, "ok")
    error = record.error or {}
    qualified = error.get("exception_type", "")
    cls = exception_class(qualified)
    detail = f"{qualified}: {error.get('exception_message', '')}"
    if qualified == "ExecutionBlocked" or (cls is not None and issubclass(cls, LoomError)):
        return Outcome(class_type, case.label, "loom", detail)
    return Outcome(class_type, case.label, "crash", detail)


def takes_a_model(facts: list[InputFact]) -> bool:
    return any(fact.required and fact.type in MODEL_TYPES for fact in facts if not fact.is_combo)


def sweep(
    runtime, *, models: bool = False, widgets: Mapping[str, Any] | None = None
) -> Iterator[Outcome]:
    """Run the edge cases of every sweepable node: those taking no model file, or with
    ``models`` only those taking one (defaults and shapes only, each number at its default
    or at ``widgets``' value, since every run loads or samples a model)."""
    env = runtime.executor.environment
    made = widget_producers(runtime)
    for class_type, definition in sorted(runtime.registry.nodes.items()):
        if class_type.startswith("SweepSource"):
            continue
        facts = input_facts(definition, env)
        if not (definition.outputs or definition.output_node) or not sweepable(facts, made):
            continue
        if takes_a_model(facts) != models:
            continue
        for case in cases(facts, limits=not models):
            if widgets:
                chosen = {f.name: widgets[f.name] for f in facts if f.name in widgets}
                case = attrs.evolve(case, widgets={**chosen, **case.widgets})
            yield run_case(runtime, class_type, definition, facts, case, made)
