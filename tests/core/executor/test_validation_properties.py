"""Random prompts never crash validation: they validate, or fail with ComfyUI's error JSON."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loom.errors import PromptValidationError

CLASSES = [
    "Const",
    "Add",
    "Show",
    "Pick",
    "SaveImage",
    "EmptyImage",
    "ImageInvert",
    "Switch",
    "Nope",
    5,
    None,
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)
links = st.lists(
    st.one_of(st.sampled_from(["1", "2", "3", "4", "9"]), st.integers(0, 5)), min_size=0, max_size=3
)
values = st.one_of(
    scalars,
    links,
    st.dictionaries(st.text(max_size=3), scalars, max_size=2),
    st.tuples(st.sampled_from(["1", "2", "3"]), st.integers(-1, 3)).map(list),
)
nodes = st.fixed_dictionaries(
    {"class_type": st.sampled_from(CLASSES)},
    optional={
        "inputs": st.dictionaries(
            st.sampled_from(["value", "a", "b", "image", "images", "mode", "scale", "width", "x"]),
            values,
            max_size=4,
        )
    },
)
prompts = st.one_of(
    st.dictionaries(st.sampled_from(["1", "2", "3", "4"]), nodes, max_size=4),
    st.lists(scalars, max_size=2),
    scalars,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(prompts)
def test_validation_answers_every_prompt_with_comfyui_shapes(registry, prompt):
    from loom.executor.executor import Executor

    executor = Executor(registry=registry)
    try:
        validated = executor.validate(prompt)
    except PromptValidationError as error:
        assert set(error.error) == {"type", "message", "details", "extra_info"}
        for entry in error.node_errors.values():
            assert set(entry) == {"errors", "dependent_outputs", "class_type"}
            for err in entry["errors"]:
                assert set(err) == {"type", "message", "details", "extra_info"}
        return
    assert validated.outputs
    result = executor.execute("p", validated.prompt, validated.outputs)
    assert result.status_str in ("success", "error")
