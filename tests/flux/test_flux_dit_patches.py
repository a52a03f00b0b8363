"""SkipLayerGuidanceDiT(+Simple) and ScaleROPE on Flux: block skipping against a DiT with those
blocks removed by hand, the post-CFG and uncond-pass rules, ScaleROPE's position ids against a
hand computation, /object_info, and tiny Flux prompts through the executor."""

from __future__ import annotations

import copy

import pytest
import torch
from flux_markers import needs_samplers
from loom_flux.dit import FluxTransformer, image_ids, patchify
from loom_flux.dit_options import BlockSkip, RopeScale, parse_layers
from loom_flux.dit_patch_nodes import (
    ScaleROPE,
    SigmaWindow,
    SkipLayerGuidance,
    SkipLayerGuidanceDiT,
    SkipLayerGuidanceDiTSimple,
    SkipLayerUncond,
)
from loom_flux.dit_tokens import scaled_image_ids
from loom_flux.model import FluxModel
from loom_flux.tiny import dit_state, tiny_spec
from torch import nn

from loom.errors import LoomError
from loom.samplers import CondBatchStep, PostCFGStep, guidance_hooks_of


@pytest.fixture(scope="module")
def dit():
    config = tiny_spec().dit
    module = FluxTransformer(config)
    module.load_state_dict(dit_state(config, seed=4))
    return module.eval()


def inputs(batch: int = 1):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch, 16, 6, 4, generator=g)
    context = torch.randn(batch, 5, 32, generator=g)
    pooled = torch.randn(batch, 32, generator=g)
    return x, torch.full((batch,), 0.7), context, pooled, torch.full((batch,), 3.5)


def cond_of(context, pooled, guidance):
    return {"c_crossattn": context, "y": pooled, "guidance": guidance}


def without_blocks(dit, double=(), single=()):
    hand = copy.deepcopy(dit)
    hand.double_blocks = nn.ModuleList(
        b for i, b in enumerate(dit.double_blocks) if i not in double
    )
    hand.single_blocks = nn.ModuleList(
        b for i, b in enumerate(dit.single_blocks) if i not in single
    )
    return hand


def test_comfyui_layer_text_parses_and_bad_text_names_node_and_input():
    assert parse_layers("7, 8, 9", node="N", input_name="double_layers") == (7, 8, 9)
    assert parse_layers(" 1,2 ;3", node="N", input_name="double_layers") == (1, 2, 3)
    assert parse_layers("", node="N", input_name="double_layers") == ()
    with pytest.raises(LoomError, match="SkipLayerGuidanceDiT: single_layers '7, eight'"):
        SkipLayerGuidanceDiT(model=object(), double_layers="1", single_layers="7, eight").run(None)


@pytest.mark.parametrize(("double", "single"), [((1,), ()), ((), (0,)), ((0, 1), (1,))])
def test_skipped_blocks_equal_a_dit_with_those_blocks_removed(dit, double, single):
    x, t, context, pooled, guidance = inputs()
    with torch.no_grad():
        skipped = dit(x, t, context, pooled, guidance, skip=BlockSkip(double, single))
        hand = without_blocks(dit, double, single)(x, t, context, pooled, guidance)
        plain = dit(x, t, context, pooled, guidance)
    assert torch.equal(skipped, hand)
    assert not torch.allclose(skipped, plain, atol=1e-4)


def test_skip_of_blocks_the_model_does_not_have_changes_nothing(dit):
    x, t, context, pooled, guidance = inputs()
    with torch.no_grad():
        skipped = dit(x, t, context, pooled, guidance, skip=BlockSkip((7, 8, 9), (7, 8, 9)))
        plain = dit(x, t, context, pooled, guidance)
    assert torch.equal(skipped, plain)


def post_cfg_step(model, x, sigma, cond, denoised, cond_denoised):
    def predict_positive(handle):
        return handle.apply_model(x, sigma, cond)

    return PostCFGStep(
        x, sigma, denoised, cond_denoised, torch.zeros_like(x), 3.0, model, predict_positive
    )


def test_slg_post_cfg_rule_with_a_hand_skipped_dit(dit):
    model = FluxModel(dit)
    x, t, context, pooled, guidance = inputs()
    cond = cond_of(context, pooled, guidance)
    cond_x0 = model.apply_model(x, t, cond)
    denoised = cond_x0 * 1.3 - 0.1
    step = post_cfg_step(model, x, t, cond, denoised, cond_x0)
    window = SigmaWindow(start=0.9, end=0.5)
    skip = BlockSkip((1,), (0,))
    out = SkipLayerGuidance(skip, 2.0, window)(step)
    by_hand = FluxModel(without_blocks(dit, (1,), (0,))).apply_model(x, t, cond)
    assert torch.allclose(out, denoised + (cond_x0 - by_hand) * 2.0, atol=1e-6)
    assert model.block_skip is None  # the skip lives on a clone
    rescaled = SkipLayerGuidance(skip, 2.0, window, rescaling_scale=0.5)(step)
    raw = denoised + (cond_x0 - by_hand) * 2.0
    factor = 0.5 * cond_x0.std() / raw.std() + 0.5
    assert torch.allclose(rescaled, raw * factor, atol=1e-6)
    # scale 0, or sigma outside [end, start]: the guided x0 as it was, the same tensor
    assert SkipLayerGuidance(skip, 0.0, window)(step) is denoised
    assert SkipLayerGuidance(skip, 2.0, SigmaWindow(start=0.6, end=0.2))(step) is denoised


def test_slg_simple_skips_blocks_in_the_negative_pass_only(dit):
    model = FluxModel(dit)
    x, t, context, pooled, guidance = inputs()
    calls = []

    def evaluate(handle, groups):
        calls.append((handle.block_skip, tuple(g is not None for g in groups)))
        return [
            handle.apply_model(x, t, g) if g is not None else torch.zeros_like(x) for g in groups
        ]

    positive = cond_of(context, pooled, guidance)
    negative = cond_of(context * 0, pooled * 0, guidance)
    skip = BlockSkip((0,), ())
    step = CondBatchStep(x, t, model, (positive, negative), evaluate)
    cond, uncond = SkipLayerUncond(skip, SigmaWindow(1.0, 0.0))(step)
    assert calls == [(None, (True, False)), (skip, (False, True))]
    assert torch.equal(cond, model.apply_model(x, t, positive))
    hand = FluxModel(without_blocks(dit, (0,))).apply_model(x, t, negative)
    assert torch.allclose(uncond, hand, atol=1e-6)
    calls.clear()
    SkipLayerUncond(skip, SigmaWindow(0.5, 0.0))(step)  # outside: one plain batch
    assert calls == [(None, (True, True))]


def test_nodes_patch_clones_and_empty_layers_return_the_model(dit):
    model = FluxModel(dit)
    same = SkipLayerGuidanceDiT(model=model, double_layers="", single_layers=" ").run(None)
    assert same is model
    patched = SkipLayerGuidanceDiT(model=model, double_layers="1", single_layers="0").run(None)
    assert patched is not model and guidance_hooks_of(model).post_cfg == ()
    (function,) = guidance_hooks_of(patched).post_cfg
    assert function.skip == BlockSkip((1,), (0,))
    # ComfyUI's window: percent_to_sigma of the model's schedule
    sampling = model.model_sampling
    assert function.window == SigmaWindow(
        sampling.percent_to_sigma(0.01), sampling.percent_to_sigma(0.15)
    )
    simple = SkipLayerGuidanceDiTSimple(model=model, double_layers="0", single_layers="").run(None)
    assert guidance_hooks_of(simple).cond_batch_function.skip == BlockSkip((0,), ())


def test_nodes_on_a_model_that_is_not_flux_name_node_and_input():
    class UNetHandle:
        name = "sd15-unet"

        def clone(self):
            return self

    with pytest.raises(LoomError, match=r"ScaleROPE: the model sd15-unet \(input 'model'\)"):
        ScaleROPE(model=UNetHandle()).run(None)
    with pytest.raises(LoomError, match="SkipLayerGuidanceDiTSimple: the model sd15-unet"):
        SkipLayerGuidanceDiTSimple(model=UNetHandle()).run(None)


def test_scaled_ids_are_comfyuis_linspace_rule():
    rope = RopeScale(scale_x=0.5, shift_x=3.0, scale_y=2.0, shift_y=-1.0, scale_t=4.0, shift_t=2.0)
    ids = scaled_image_ids(2, 3, 4, torch.device("cpu"), rope, index=1, h_offset=5, w_offset=0)
    rows = torch.tensor([4.0, 6.0, 8.0])  # 5 - 1 + 2 i
    cols = torch.tensor([3.0, 3.5, 4.0, 4.5])  # 0 + 3 + 0.5 i
    expected = torch.stack(
        [
            torch.full((3, 4), 3.0),  # index + shift_t; scale_t has no effect on Flux
            rows[:, None].expand(3, 4),
            cols[None, :].expand(3, 4),
        ],
        dim=-1,
    ).reshape(1, 12, 3)
    assert ids.shape == (2, 12, 3)
    assert torch.allclose(ids, expected.expand(2, -1, -1), atol=1e-6)
    identity = scaled_image_ids(1, 3, 4, torch.device("cpu"), RopeScale())
    assert torch.equal(identity, image_ids(1, 3, 4, torch.device("cpu")))


def test_scale_rope_is_the_plain_model_at_identity_and_the_hand_ids_otherwise(dit):
    x, t, context, pooled, guidance = inputs()
    rope = RopeScale(scale_x=2.0, shift_x=1.0, scale_y=0.5, shift_y=4.0, shift_t=1.0)
    with torch.no_grad():
        plain = dit(x, t, context, pooled, guidance)
        identity = dit(x, t, context, pooled, guidance, rope=RopeScale())
        scaled = dit(x, t, context, pooled, guidance, rope=rope)
        ids = image_ids(1, 3, 2, x.device).clone()
        ids[..., 0] += 1.0
        ids[..., 1] = ids[..., 1] * 0.5 + 4.0
        ids[..., 2] = ids[..., 2] * 2.0 + 1.0
        tokens = dit.forward_tokens(
            patchify(x), ids, context, torch.zeros(1, 5, 3), t, pooled, guidance
        )
    assert torch.equal(identity, plain)
    expected = tokens.reshape(1, 3, 2, 16, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(1, 16, 6, 4)
    assert torch.allclose(scaled, expected, atol=1e-5)
    assert not torch.allclose(scaled, plain, atol=1e-4)


def test_scale_rope_node_sets_the_handles_ids_and_apply_model_uses_them(dit):
    model = FluxModel(dit)
    x, t, context, pooled, guidance = inputs()
    cond = cond_of(context, pooled, guidance)
    patched = ScaleROPE(model=model, scale_x=2.0, shift_y=3.0).run(None)
    assert model.rope_scale is None
    assert patched.rope_scale == RopeScale(scale_x=2.0, shift_y=3.0)
    expected = model.model_sampling.calculate_denoised(
        t, dit(x, t, context, pooled, guidance, rope=patched.rope_scale), x
    )
    assert torch.allclose(patched.apply_model(x, t, cond), expected, atol=1e-6)


def test_object_info_is_comfyuis(runtime):
    from loom.nodes.object_info import object_info

    info = object_info(runtime.registry, runtime.environment)
    layers = ["STRING", {"default": "7, 8, 9", "multiline": False}]
    slg = info["SkipLayerGuidanceDiT"]
    assert slg["input"]["required"] == {
        "model": ["MODEL", {}],
        "double_layers": layers,
        "single_layers": layers,
        "scale": ["FLOAT", {"default": 3.0, "min": 0.0, "max": 10.0, "step": 0.1}],
        "start_percent": ["FLOAT", {"default": 0.01, "min": 0.0, "max": 1.0, "step": 0.001}],
        "end_percent": ["FLOAT", {"default": 0.15, "min": 0.0, "max": 1.0, "step": 0.001}],
        "rescaling_scale": ["FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.01}],
    }
    simple = info["SkipLayerGuidanceDiTSimple"]
    assert simple["input"]["required"] == {
        "model": ["MODEL", {}],
        "double_layers": layers,
        "single_layers": layers,
        "start_percent": ["FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001}],
        "end_percent": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001}],
    }
    for entry in (slg, simple):
        assert (entry["output"], entry["category"]) == (["MODEL"], "advanced/guidance")
        assert entry["python_module"] == "comfy_extras.nodes_slg" and entry["experimental"]
    rope = info["ScaleROPE"]
    scale = ["FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.1}]
    shift = ["FLOAT", {"default": 0.0, "min": -256.0, "max": 256.0, "step": 0.1}]
    assert list(rope["input"]["required"]) == [
        "model", "scale_x", "shift_x", "scale_y", "shift_y", "scale_t", "shift_t"
    ]  # fmt: skip
    assert rope["input"]["required"]["scale_t"] == scale
    assert rope["input"]["required"]["shift_y"] == shift
    assert (rope["category"], rope["python_module"]) == (
        "advanced/model_patches",
        "comfy_extras.nodes_rope",
    )


# --- through the executor -----------------------------------------------------------------


def samples_of(result) -> torch.Tensor:
    return result.values["12"][0][0]["samples"]


def changed(result, plain) -> bool:
    """The sampled latent moved by more than rounding (the tiny VAE damps changes)."""
    diff = (samples_of(result) - samples_of(plain)).abs().mean()
    return bool(diff > 1e-3 * samples_of(plain).abs().mean())


def _with_patch(prompt: dict, class_type: str, **inputs) -> dict:
    from test_flux_workflows import custom_advanced  # noqa: F401

    prompt = copy.deepcopy(prompt)
    prompt["30"] = {"class_type": class_type, "inputs": {"model": ["6", 0], **inputs}}
    for node in ("7",):
        prompt[node]["inputs"]["model"] = ["30", 0]
    return prompt


def cfg_prompt() -> dict:
    """The dev template with a CFGGuider (cfg 2, an empty negative) in place of BasicGuider."""
    from test_flux_workflows import custom_advanced

    prompt = custom_advanced()
    prompt["15"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}}
    prompt["7"] = {
        "class_type": "CFGGuider",
        "inputs": {"model": ["6", 0], "positive": ["5", 0], "negative": ["15", 0], "cfg": 2.0},
    }
    return prompt


@needs_samplers
def test_slg_prompts_through_the_executor(runtime):
    from test_flux_workflows import image_of, run

    plain_run = run(runtime, cfg_prompt())
    plain = image_of(plain_run)
    slg = dict(double_layers="1", single_layers="0", start_percent=0.0, end_percent=1.0)
    off = _with_patch(cfg_prompt(), "SkipLayerGuidanceDiT", **slg, scale=0.0, rescaling_scale=0.0)
    assert torch.equal(image_of(run(runtime, off)), plain)
    outside = _with_patch(
        cfg_prompt(), "SkipLayerGuidanceDiT", **{**slg, "start_percent": 0.999},
        scale=3.0, rescaling_scale=0.0,
    )  # fmt: skip
    assert torch.equal(image_of(run(runtime, outside)), plain)
    on = _with_patch(cfg_prompt(), "SkipLayerGuidanceDiT", **slg, scale=3.0, rescaling_scale=0.0)
    assert changed(run(runtime, on), plain_run)
    simple = _with_patch(cfg_prompt(), "SkipLayerGuidanceDiTSimple", **slg)
    assert changed(run(runtime, simple), plain_run)


@needs_samplers
def test_scale_rope_prompt_through_the_executor(runtime):
    from test_flux_workflows import custom_advanced, image_of, run

    rope = dict(scale_x=1.0, shift_x=0.0, scale_y=1.0, shift_y=0.0, scale_t=1.0, shift_t=0.0)
    plain_run = run(runtime, custom_advanced())
    plain = image_of(plain_run)
    identity = _with_patch(custom_advanced(), "ScaleROPE", **rope)
    assert torch.equal(image_of(run(runtime, identity)), plain)
    shifted = _with_patch(custom_advanced(), "ScaleROPE", **{**rope, "scale_x": 2.0})
    # the tiny DiT's attention is nearly flat: the ids' effect is small but real
    assert not torch.equal(samples_of(run(runtime, shifted)), samples_of(plain_run))


@needs_samplers
def test_model_compute_dtype_bf16_runs_the_tiny_flux_dit_in_bf16(runtime, monkeypatch):
    from test_flux_workflows import custom_advanced, run

    seen: list[torch.dtype] = []
    original = FluxTransformer.forward

    def spy(self, x, *args, **kwargs):
        seen.append(x.dtype)
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(FluxTransformer, "forward", spy)
    plain = run(runtime, custom_advanced())
    assert set(seen) == {torch.float32}
    seen.clear()
    bf16 = run(runtime, _with_patch(custom_advanced(), "ModelComputeDtype", dtype="bf16"))
    assert seen and set(seen) == {torch.bfloat16}
    assert samples_of(bf16).dtype == torch.float32
    assert torch.allclose(samples_of(bf16), samples_of(plain), atol=0.1)
    assert not torch.equal(samples_of(bf16), samples_of(plain))


@needs_samplers
@pytest.mark.parametrize("node", ["EasyCache", "LazyCache"])
def test_step_cache_on_tiny_flux(runtime, monkeypatch, node):
    from test_flux_workflows import custom_advanced, run

    calls: list[int] = []
    original = FluxModel.apply_model

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FluxModel, "apply_model", counting)

    def prompt(threshold=None):
        base = custom_advanced()
        base["8"]["inputs"]["steps"] = 8
        if threshold is None:
            return base
        cache = dict(reuse_threshold=threshold, start_percent=0.0, end_percent=1.0, verbose=True)
        return _with_patch(base, node, **cache)

    plain = samples_of(run(runtime, prompt()))
    assert len(calls) == 8
    calls.clear()
    assert torch.equal(samples_of(run(runtime, prompt(0.0))), plain) and len(calls) == 8
    calls.clear()
    loose = samples_of(run(runtime, prompt(3.0)))
    assert 2 <= len(calls) < 8 and torch.isfinite(loose).all()
