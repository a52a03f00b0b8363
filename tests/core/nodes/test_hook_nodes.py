"""The model-agnostic hook nodes: /object_info entries, combining hooks, keyframe schedules
against hand computation, and the property nodes writing exactly what ConditioningSetMask /
ConditioningSetTimestepRange write."""

from __future__ import annotations

import math

import pytest
import torch
from loom_toy_family import make_registry, run_node

from loom.errors import LoomError
from loom.hooks import (
    DEFAULT,
    HOOKS,
    HookGroup,
    HookKeyframe,
    HookKeyframes,
    TimestepsRange,
    WeightHook,
)
from loom.nodes.object_info import to_json


class Weights:
    """A stand-in weight source (the hook nodes never call it)."""

    label = "test weights"

    def add_patches(self, value, kind, strength):  # pragma: no cover - not called here
        raise AssertionError


@pytest.fixture(scope="module")
def registry():
    return make_registry()


def group(*names: str) -> HookGroup:
    return HookGroup(tuple(WeightHook(Weights(), strength_model=i) for i, _ in enumerate(names)))


def cond(value: float, **options):
    return [[torch.full((1, 2, 3), value), dict(options)]]


def info(registry, class_type: str) -> dict:
    return to_json(registry.get_node(class_type), registry)


def test_object_info_entries_match_comfyui(registry):
    combine = info(registry, "CombineHooks2")
    # ComfyUI sends the node's INPUT_TYPES as declared: an empty "required" stays
    assert combine["input"]["required"] == {}
    assert list(combine["input"]["optional"]) == ["hooks_A", "hooks_B"]
    assert combine["input_order"]["required"] == []
    props = info(registry, "PairConditioningSetProperties")
    assert props["category"] == "advanced/hooks/cond pair"
    assert props["python_module"] == "comfy_extras.nodes_hooks"
    assert props["experimental"] is True
    assert list(props["input"]["required"]) == [
        "positive_NEW",
        "negative_NEW",
        "strength",
        "set_cond_area",
    ]
    assert props["input"]["required"]["strength"] == [
        "FLOAT",
        {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01},
    ]
    assert props["input"]["required"]["set_cond_area"][0] == ["default", "mask bounds"]
    assert props["input"]["optional"] == {
        "mask": ["MASK"],
        "hooks": ["HOOKS"],
        "timesteps": ["TIMESTEPS_RANGE"],
    }
    assert props["output"] == ["CONDITIONING", "CONDITIONING"]
    assert props["output_name"] == ["positive", "negative"]
    kf = info(registry, "CreateHookKeyframe")
    assert kf["output"] == ["HOOK_KEYFRAMES"] and kf["output_name"] == ["HOOK_KF"]
    assert kf["input"]["required"]["strength_mult"][1] == {
        "default": 1.0,
        "min": -20.0,
        "max": 20.0,
        "step": 0.01,
    }
    floats = info(registry, "CreateHookKeyframesFromFloats")["input"]["required"]
    assert floats["floats_strength"][0] == "FLOATS"
    assert floats["floats_strength"][1]["forceInput"] is True
    interp = info(registry, "CreateHookKeyframesInterpolated")["input"]["required"]
    assert interp["interpolation"][0] == ["linear", "ease_in", "ease_out", "ease_in_out"]
    assert interp["keyframes_count"][1] == {"default": 5, "min": 2, "max": 100, "step": 1}
    ranges = info(registry, "ConditioningTimestepsRange")
    assert ranges["output"] == ["TIMESTEPS_RANGE"] * 3
    assert ranges["output_name"] == ["TIMESTEPS_RANGE", "BEFORE_RANGE", "AFTER_RANGE"]
    combine = info(registry, "CombineHooks8")
    assert combine["input"].get("required", {}) == {}
    assert list(combine["input"]["optional"]) == [f"hooks_{c}" for c in "ABCDEFGH"]
    default = info(registry, "PairConditioningSetDefaultCombine")
    assert list(default["input"]["required"]) == [
        "positive",
        "negative",
        "positive_DEFAULT",
        "negative_DEFAULT",
    ]


def test_combine_hooks_keeps_order_drops_repeats_and_none(registry):
    a, b = group("a"), group("b", "c")
    (out,) = run_node(registry, "CombineHooks4", hooks_A=a, hooks_B=None, hooks_C=b, hooks_D=a)
    assert [h for h in out.hooks] == [*a.hooks, *b.hooks]
    (same,) = run_node(registry, "CombineHooks2", hooks_A=None, hooks_B=b)
    assert same is b
    (nothing,) = run_node(registry, "CombineHooks2")
    assert nothing is None


def test_keyframe_nodes_sort_by_start_and_interpolate_as_comfyui(registry):
    (one,) = run_node(registry, "CreateHookKeyframe", strength_mult=0.5, start_percent=0.6)
    (two,) = run_node(
        registry, "CreateHookKeyframe", strength_mult=2.0, start_percent=0.2, prev_hook_kf=one
    )
    assert two.keyframes == (HookKeyframe(2.0, 0.2, 1), HookKeyframe(0.5, 0.6, 1))
    (eased,) = run_node(
        registry,
        "CreateHookKeyframesInterpolated",
        strength_start=1.0,
        strength_end=3.0,
        interpolation="ease_in_out",
        start_percent=0.0,
        end_percent=0.5,
        keyframes_count=3,
        print_keyframes=False,
    )
    # percents linear over [0, .5]; strengths 1 + 2 * (1 - cos(pi t)) / 2 at t = 0, .5, 1
    expected = [(0.0, 1.0, 1), (0.25, 2.0, 0), (0.5, 3.0, 0)]
    got = [(k.start_percent, k.strength, k.guarantee_steps) for k in eased.keyframes]
    for (p, s, g), (ep, es, eg) in zip(got, expected, strict=True):
        assert math.isclose(p, ep, abs_tol=1e-6) and math.isclose(s, es, abs_tol=1e-6) and g == eg
    (floats,) = run_node(
        registry,
        "CreateHookKeyframesFromFloats",
        floats_strength=[0.1, 0.2, 0.3, 0.4, 0.5],
        start_percent=0.0,
        end_percent=1.0,
        print_keyframes=False,
    )
    assert [round(k.start_percent, 6) for k in floats.keyframes] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [k.strength for k in floats.keyframes] == [0.1, 0.2, 0.3, 0.4, 0.5]


def test_set_hook_keyframes_gives_every_hook_the_schedule_and_keeps_identity(registry):
    hooks = group("a", "b")
    schedule = HookKeyframes().add(HookKeyframe(0.0, 0.5))
    (out,) = run_node(registry, "SetHookKeyframes", hooks=hooks, hook_kf=schedule)
    assert all(h.keyframes == schedule for h in out.hooks)
    assert [h.ref for h in out.hooks] == [h.ref for h in hooks.hooks]
    assert out.combine(hooks).hooks == out.hooks  # same refs: nothing added twice
    (unchanged,) = run_node(registry, "SetHookKeyframes", hooks=hooks)
    assert unchanged is hooks


def test_set_properties_writes_what_set_mask_and_timestep_range_write(registry):
    mask = torch.rand(8, 8)
    (expected_mask,) = run_node(
        registry,
        "ConditioningSetMask",
        conditioning=cond(1.0),
        mask=mask,
        strength=0.7,
        set_cond_area="mask bounds",
    )
    (expected_range,) = run_node(
        registry, "ConditioningSetTimestepRange", conditioning=expected_mask, start=0.2, end=0.6
    )
    hooks = group("a")
    (out,) = run_node(
        registry,
        "ConditioningSetProperties",
        cond_NEW=cond(1.0),
        strength=0.7,
        set_cond_area="mask bounds",
        mask=mask,
        hooks=hooks,
        timesteps=TimestepsRange(0.2, 0.6),
    )
    ((_, options),) = out
    ((_, reference),) = expected_range
    assert options.keys() == {*reference, HOOKS}
    assert options[HOOKS] is hooks
    assert torch.equal(options["mask"], reference["mask"])
    for key in ("set_area_to_bounds", "mask_strength", "start_percent", "end_percent"):
        assert options[key] == reference[key]
    (plain,) = run_node(
        registry,
        "ConditioningSetProperties",
        cond_NEW=cond(1.0),
        strength=0.3,
        set_cond_area="default",
    )
    assert plain[0][1] == {}  # strength only acts through a mask, as in ComfyUI


def test_pair_properties_share_one_combined_group_so_entries_batch_together(registry):
    first, second = group("a"), group("b")
    positive = cond(1.0, **{HOOKS: first})
    negative = cond(2.0, **{HOOKS: first})
    out = run_node(
        registry,
        "PairConditioningSetPropertiesAndCombine",
        positive=cond(0.0),
        negative=cond(0.0),
        positive_NEW=positive,
        negative_NEW=negative,
        strength=1.0,
        set_cond_area="default",
        hooks=second,
    )
    new_pos, new_neg = out[0][1][1], out[1][1][1]
    assert new_pos[HOOKS] is new_neg[HOOKS]
    assert new_pos[HOOKS].hooks == (*first.hooks, *second.hooks)
    assert len(out[0]) == 2 and out[0][0][1] == {}
    assert positive[0][1][HOOKS] is first  # inputs untouched


def test_default_combine_marks_the_new_entries_default(registry):
    hooks = group("a")
    (out,) = run_node(
        registry,
        "ConditioningSetDefaultCombine",
        cond=cond(1.0),
        cond_DEFAULT=cond(2.0),
        hooks=hooks,
    )
    assert out[0][1] == {} and out[1][1] == {DEFAULT: True, HOOKS: hooks}
    pos, neg = run_node(
        registry,
        "PairConditioningSetDefaultCombine",
        positive=cond(1.0),
        negative=cond(2.0),
        positive_DEFAULT=cond(3.0),
        negative_DEFAULT=cond(4.0),
    )
    assert pos[1][1] == {DEFAULT: True} and neg[1][1] == {DEFAULT: True}
    assert float(neg[1][0][0, 0, 0]) == 4.0


def test_timesteps_range_outputs_the_range_and_both_sides(registry):
    out = run_node(registry, "ConditioningTimestepsRange", start_percent=0.25, end_percent=0.75)
    assert out == (TimestepsRange(0.25, 0.75), TimestepsRange(0.0, 0.25), TimestepsRange(0.75, 1.0))


def test_keyframes_where_hooks_are_expected_name_the_node_and_input(registry):
    schedule = HookKeyframes().add(HookKeyframe(1.0))
    with pytest.raises(
        LoomError, match=r"ConditioningSetProperties: input 'hooks' expects HOOKS.*HOOK_KEYFRAMES"
    ):
        run_node(
            registry,
            "ConditioningSetProperties",
            cond_NEW=cond(1.0),
            strength=1.0,
            set_cond_area="default",
            hooks=schedule,
        )
    with pytest.raises(LoomError, match=r"CombineHooks2: input 'hooks_B' expects HOOKS"):
        run_node(registry, "CombineHooks2", hooks_A=group("a"), hooks_B=schedule)
