"""Hooks while sampling, on the toy MODEL: entries batch per hook group and each group runs
on its own clone, keyframes follow ComfyUI's guarantee-step rule, default entries fill only
what the others leave uncovered."""

from __future__ import annotations

import copy

import pytest
import torch
from device_params import DEVICES, memory_manager
from loom_samplers.guiders import Guider
from loom_samplers.hook_models import HookedModels, KeyframeCursor

from loom.errors import LoomError
from loom.hooks import DEFAULT, HOOKS, HookGroup, HookKeyframe, HookKeyframes, WeightHook


@pytest.fixture
def shifted(toy_model):
    """The toy MODEL whose clones may add ``shift`` to every prediction (a stand-in for
    weight patches); clones share the call log."""

    class ShiftedToy(toy_model):
        shift = 0.0

        def clone(self):
            return copy.copy(self)

        def apply_model(self, x, sigma, cond):
            return super().apply_model(x, sigma, cond) + self.shift

    return ShiftedToy


class Shift:
    """Hook weights that shift a clone's predictions by ``strength``."""

    label = "shift"

    def __init__(self) -> None:
        self.asked: list[tuple[str, float]] = []

    def add_patches(self, value, kind, strength):
        self.asked.append((kind, strength))
        value.shift += strength
        return 1


def hooks(strength: float = 1.0, keyframes: HookKeyframes | None = None) -> HookGroup:
    hook = WeightHook(Shift(), strength_model=strength)
    return HookGroup((hook.with_keyframes(keyframes),))


def prepared(model_class, conds, cfg=1.0, sigmas=None):
    model = model_class()
    guider = Guider(model, conds, cfg)
    noise = torch.zeros(1, 4, 16, 16)
    guider.prepare(noise, noise, None, 0, sigmas)
    return model, guider


def test_a_hooked_positive_runs_on_its_own_clone_and_the_negative_on_the_model(cond, shifted):
    group = hooks(0.25)
    model, guider = prepared(
        shifted, {"positive": cond(1.0, **{HOOKS: group}), "negative": cond(-1.0)}, cfg=3.0
    )
    x = torch.zeros(1, 4, 16, 16)
    out, _ = guider.predict(x, torch.tensor([1.0]))
    # two model calls of one row each (different groups never share a batch)
    assert [c[0][0] for c in model.calls] == [1, 1]
    cond_x0, uncond_x0 = 0.5 + 0.25, -0.5  # toy answer at σ=1, x=0 is mu/2 (+ shift)
    assert torch.allclose(out, torch.full_like(x, uncond_x0 + 3.0 * (cond_x0 - uncond_x0)))
    guider.predict(x, torch.tensor([0.5]))
    assert group.hooks[0].weights.asked == [("model", 0.25)]  # one clone for the run


def test_the_same_group_on_both_entries_batches_them_in_one_call(cond, shifted):
    group = hooks()
    model, guider = prepared(
        shifted,
        {"positive": cond(1.0, **{HOOKS: group}), "negative": cond(-1.0, **{HOOKS: group})},
        cfg=2.0,
    )
    guider.predict(torch.zeros(1, 4, 16, 16), torch.tensor([1.0]))
    assert [c[0][0] for c in model.calls] == [2]


def test_keyframe_cursor_follows_guaranteed_steps_as_comfyui():
    # starts as sigmas: 0% -> inf, 30% -> 7, 40% -> 5, 90% -> 1
    frames = HookKeyframes(
        (
            HookKeyframe(1.0, 0.0, 1),
            HookKeyframe(0.5, 0.3, 0),
            HookKeyframe(0.2, 0.4, 0),
            HookKeyframe(0.0, 0.9, 1),
        )
    )
    cursor = KeyframeCursor(frames, (1e9, 7.0, 5.0, 1.0), max_sigma=10.0)
    seen = []
    for sigma in (10.0, 10.0, 6.0, 4.0, 2.0, 1.0, 0.5):
        cursor.advance(sigma)
        seen.append(cursor.strength)
    # 10: the 0% keyframe (it starts before the range, so guarantees nothing: 30% is not
    # reached yet); 6: past 30%, and 40% (guarantees 0) is not reached; 4: skips to 40%;
    # 1: 90% reached
    assert seen == [1.0, 1.0, 0.5, 0.2, 0.2, 0.0, 0.0]
    # a keyframe that guarantees 2 steps holds them even when the next one is reached
    held = KeyframeCursor(
        HookKeyframes((HookKeyframe(1.0, 0.1, 2), HookKeyframe(0.0, 0.2, 1))),
        (9.0, 8.0),
        max_sigma=10.0,
    )
    strengths = []
    for sigma in (5.0, 4.0, 3.0):
        held.advance(sigma)
        strengths.append(held.strength)
    assert strengths == [1.0, 1.0, 0.0]


def test_hooked_models_scale_by_the_keyframe_and_use_the_model_at_strength_zero(shifted):
    model = shifted()
    frames = HookKeyframes((HookKeyframe(1.0, 0.0), HookKeyframe(0.0, 0.5)))
    group = hooks(2.0, frames)
    hooked = HookedModels(model, max_sigma=14.6)
    hooked.advance(group, 14.6)
    first = hooked.model_for(group)
    assert first is not model and first.shift == 2.0
    assert hooked.model_for(group) is first  # kept for the run
    hooked.advance(group, 0.1)  # past 50%
    assert hooked.model_for(group) is model
    assert hooked.model_for(None) is model


def test_default_entries_fill_only_what_the_others_leave(cond, shifted):
    mask = torch.zeros(16, 16)
    mask[:, :8] = 1.0
    positive = cond(1.0, mask=mask, mask_strength=1.0) + cond(3.0, **{DEFAULT: True})
    _model, guider = prepared(shifted, {"positive": positive})
    out, _ = guider.predict(torch.zeros(1, 4, 16, 16), torch.tensor([1.0]))
    # left: the masked entry alone (1/2); right: the default entry alone (3/2)
    assert torch.allclose(out[..., :8], torch.full((1, 4, 16, 8), 0.5))
    assert torch.allclose(out[..., 8:], torch.full((1, 4, 16, 8), 1.5))


def test_default_entries_are_not_evaluated_when_the_others_cover_everything(cond, shifted):
    positive = cond(1.0) + cond(3.0, **{DEFAULT: True})
    model, guider = prepared(shifted, {"positive": positive})
    out, _ = guider.predict(torch.zeros(1, 4, 16, 16), torch.tensor([1.0]))
    assert torch.allclose(out, torch.full_like(out, 0.5))
    assert [c[0][0] for c in model.calls] == [1]


def test_a_hooks_option_of_the_wrong_type_is_named(cond, shifted):
    with pytest.raises(LoomError, match="'hooks' option holds HookKeyframes, not HOOKS"):
        prepared(shifted, {"positive": cond(1.0, **{HOOKS: HookKeyframes()})})


class DiffWeights:
    """Hook weights adding ``diff`` to a handle's ``weight`` (a stand-in LoRA)."""

    label = "diff"

    def __init__(self, diff: torch.Tensor) -> None:
        self.diff = diff

    def add_patches(self, value, kind, strength):
        from loom.memory import DiffPatch

        return len(value.add_patches({"weight": DiffPatch(self.diff)}, strength))


@pytest.mark.parametrize("device", DEVICES)
def test_a_groups_clone_is_patched_where_the_model_computes_and_the_model_comes_back(device):
    from types import SimpleNamespace

    from loom_samplers.hook_models import load_for_call

    from loom.memory import ModelHandle

    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 4).requires_grad_(False)
    base = layer.weight.detach().clone()
    diff = torch.randn(4, 4)
    handle = ModelHandle(layer)
    memory = memory_manager(device)
    ctx = SimpleNamespace(runtime=SimpleNamespace(memory=memory))
    group = HookGroup((WeightHook(DiffWeights(diff), strength_model=0.5),))
    hooked = HookedModels(handle, max_sigma=10.0)
    x = torch.zeros(1, 4)
    clone = hooked.model_for(group)
    load_for_call(ctx, clone, x)
    assert layer.weight.device.type == device
    merged = base.to(device, memory.merge_dtype, copy=True)  # added in the merge dtype
    merged += 0.5 * diff.to(device, memory.merge_dtype)
    torch.testing.assert_close(layer.weight.cpu(), merged.float().cpu(), atol=1e-6, rtol=0)
    load_for_call(ctx, hooked.model_for(None), x)
    assert torch.equal(layer.weight.cpu(), base)
