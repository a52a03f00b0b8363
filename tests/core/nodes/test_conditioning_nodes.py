"""Conditioning nodes against hand-computed values; inputs are never mutated."""

from __future__ import annotations

import copy

import pytest
import torch
from loom_toy_family import make_registry, run_node

from loom.nodes.object_info import to_json


@pytest.fixture(scope="module")
def registry():
    return make_registry()


def _cond(value: float, tokens: int = 2, dim: int = 3, **options):
    return [[torch.full((1, tokens, dim), value), dict(options)]]


def _run(registry, node, **inputs):
    snapshot = copy.deepcopy(inputs)
    (out,) = run_node(registry, node, **inputs)
    for name, value in inputs.items():  # inputs untouched, dicts and tensors alike
        if isinstance(value, list):
            for (tensor, options), (tensor0, options0) in zip(value, snapshot[name], strict=True):
                assert torch.equal(tensor, tensor0)
                assert options.keys() == options0.keys()
    return out


def test_combine_concatenates_lists(registry):
    a, b = _cond(1.0) + _cond(2.0), _cond(3.0)
    out = _run(registry, "ConditioningCombine", conditioning_1=a, conditioning_2=b)
    assert [float(t[0, 0, 0]) for t, _ in out] == [1.0, 2.0, 3.0]
    assert out[0] is a[0] and out[2] is b[0]


def test_average_weights_tokens_and_pooled(registry):
    to = _cond(1.0, pooled_output=torch.tensor([[10.0]]), extra="kept")
    frm = _cond(5.0, pooled_output=torch.tensor([[20.0]]))
    out = _run(
        registry,
        "ConditioningAverage",
        conditioning_to=to,
        conditioning_from=frm,
        conditioning_to_strength=0.25,
    )
    tensor, options = out[0]
    assert torch.allclose(tensor, torch.full((1, 2, 3), 0.25 * 1 + 0.75 * 5))
    assert torch.allclose(options["pooled_output"], torch.tensor([[0.25 * 10 + 0.75 * 20]]))
    assert options["extra"] == "kept" and options is not to[0][1]


def test_average_pads_short_from_and_truncates_long_from(registry):
    to = _cond(2.0, tokens=3)
    short = _cond(4.0, tokens=1)
    ((tensor, _),) = _run(
        registry,
        "ConditioningAverage",
        conditioning_to=to,
        conditioning_from=short,
        conditioning_to_strength=0.5,
    )
    assert torch.allclose(tensor[0, :, 0], torch.tensor([3.0, 1.0, 1.0]))  # (2+4)/2, then (2+0)/2
    long = _cond(4.0, tokens=5)
    ((tensor, _),) = _run(
        registry,
        "ConditioningAverage",
        conditioning_to=to,
        conditioning_from=long,
        conditioning_to_strength=0.5,
    )
    assert tensor.shape == (1, 3, 3)


def test_average_pooled_fallbacks(registry):
    frm = _cond(0.0, pooled_output=torch.tensor([[8.0]]))
    ((_, options),) = _run(
        registry,
        "ConditioningAverage",
        conditioning_to=_cond(1.0),
        conditioning_from=frm,
        conditioning_to_strength=0.5,
    )
    # "to" has no pooled output: ComfyUI averages "from" with itself
    assert torch.allclose(options["pooled_output"], torch.tensor([[8.0]]))
    ((_, options),) = _run(
        registry,
        "ConditioningAverage",
        conditioning_to=_cond(1.0, pooled_output=torch.tensor([[2.0]])),
        conditioning_from=_cond(0.0),
        conditioning_to_strength=0.5,
    )
    assert torch.equal(options["pooled_output"], torch.tensor([[2.0]]))


def test_concat_joins_along_tokens(registry):
    to = _cond(1.0, tokens=2, area=(1, 1, 0, 0)) + _cond(2.0, tokens=4)
    frm = _cond(9.0, tokens=3) + _cond(7.0, tokens=1)  # only the first "from" is used
    out = _run(registry, "ConditioningConcat", conditioning_to=to, conditioning_from=frm)
    assert [tuple(t.shape) for t, _ in out] == [(1, 5, 3), (1, 7, 3)]
    assert out[0][0][0, :, 0].tolist() == [1.0, 1.0, 9.0, 9.0, 9.0]
    assert out[0][1] == {"area": (1, 1, 0, 0)} and out[0][1] is not to[0][1]


def test_set_area_in_latent_units(registry):
    cond = _cond(1.0, strength=0.1)
    ((tensor, options),) = _run(
        registry,
        "ConditioningSetArea",
        conditioning=cond,
        width=200,
        height=120,
        x=64,
        y=36,
        strength=1.5,
    )
    assert options == {"area": (15, 25, 4, 8), "strength": 1.5, "set_area_to_bounds": False}
    assert tensor is cond[0][0] and cond[0][1] == {"strength": 0.1}


def test_set_area_percentage(registry):
    ((_, options),) = _run(
        registry,
        "ConditioningSetAreaPercentage",
        conditioning=_cond(1.0),
        width=0.5,
        height=0.25,
        x=0.1,
        y=0.2,
        strength=2.0,
    )
    assert options == {
        "area": ("percentage", 0.25, 0.5, 0.2, 0.1),
        "strength": 2.0,
        "set_area_to_bounds": False,
    }


def test_set_mask(registry):
    mask = torch.ones(4, 4)
    ((_, options),) = _run(
        registry,
        "ConditioningSetMask",
        conditioning=_cond(1.0),
        mask=mask,
        strength=0.7,
        set_cond_area="mask bounds",
    )
    assert options["mask"].shape == (1, 4, 4)
    assert options["set_area_to_bounds"] is True and options["mask_strength"] == 0.7
    ((_, options),) = _run(
        registry,
        "ConditioningSetMask",
        conditioning=_cond(1.0),
        mask=torch.ones(2, 4, 4),
        strength=1.0,
        set_cond_area="default",
    )
    assert options["mask"].shape == (2, 4, 4) and options["set_area_to_bounds"] is False


def test_zero_out_zeros_tokens_and_pooled(registry):
    cond = _cond(3.0, pooled_output=torch.ones(1, 5), other=torch.ones(2))
    ((tensor, options),) = _run(registry, "ConditioningZeroOut", conditioning=cond)
    assert torch.equal(tensor, torch.zeros(1, 2, 3))
    assert torch.equal(options["pooled_output"], torch.zeros(1, 5))
    assert torch.equal(options["other"], torch.ones(2))
    assert torch.equal(cond[0][1]["pooled_output"], torch.ones(1, 5))
    ((_, options),) = _run(
        registry, "ConditioningZeroOut", conditioning=_cond(1.0, pooled_output=None)
    )
    assert options["pooled_output"] is None


def test_timestep_range(registry):
    ((_, options),) = _run(
        registry, "ConditioningSetTimestepRange", conditioning=_cond(1.0, x=1), start=0.2, end=0.75
    )
    assert options == {"x": 1, "start_percent": 0.2, "end_percent": 0.75}


def test_declarations_match_comfyui(registry):
    expected = {
        "ConditioningCombine": (
            "conditioning",
            "Conditioning (Combine)",
            ["conditioning_1", "conditioning_2"],
        ),
        "ConditioningAverage": (
            "conditioning",
            "ConditioningAverage",
            ["conditioning_to", "conditioning_from", "conditioning_to_strength"],
        ),
        "ConditioningConcat": (
            "conditioning",
            "Conditioning (Concat)",
            ["conditioning_to", "conditioning_from"],
        ),
        "ConditioningSetArea": (
            "conditioning",
            "Conditioning (Set Area)",
            ["conditioning", "width", "height", "x", "y", "strength"],
        ),
        "ConditioningSetAreaPercentage": (
            "conditioning",
            "Conditioning (Set Area with Percentage)",
            ["conditioning", "width", "height", "x", "y", "strength"],
        ),
        "ConditioningSetMask": (
            "conditioning",
            "Conditioning (Set Mask)",
            ["conditioning", "mask", "strength", "set_cond_area"],
        ),
        "ConditioningZeroOut": ("advanced/conditioning", "ConditioningZeroOut", ["conditioning"]),
        "ConditioningSetTimestepRange": (
            "advanced/conditioning",
            "ConditioningSetTimestepRange",
            ["conditioning", "start", "end"],
        ),
    }
    for node, (category, display, order) in expected.items():
        info = to_json(registry.get_node(node), registry)
        assert (info["category"], info["display_name"], info["input_order"]["required"]) == (
            category,
            display,
            order,
        )
        assert info["output"] == ["CONDITIONING"] and info["python_module"] == "nodes"
        assert info["description"] == ""
    area = to_json(registry.get_node("ConditioningSetArea"), registry)["input"]["required"]
    assert area["width"] == ["INT", {"default": 64, "min": 64, "max": 16384, "step": 8}]
    assert area["strength"] == ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}]
    mask = to_json(registry.get_node("ConditioningSetMask"), registry)["input"]["required"]
    assert mask["set_cond_area"] == [["default", "mask bounds"]]
    timestep = to_json(registry.get_node("ConditioningSetTimestepRange"), registry)["input"][
        "required"
    ]
    assert timestep["end"] == ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001}]
