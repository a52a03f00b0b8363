"""SelfAttentionGuidance: the recorded middle-block attention map, the degraded x0 against a
hand computation of ComfyUI's blur rule, the post-CFG rule and /object_info."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from loom_sd15.sag import (
    RECORDED_BLOCK,
    AttentionRecorder,
    SelfAttentionGuidance,
    SelfAttentionGuided,
    degraded_x0,
)
from loom_sd15.unet import UNetCall, UNetConfig, UNetModel

from loom.errors import LoomError
from loom.samplers import PostCFGStep, guidance_hooks_of

CONFIG = UNetConfig(
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_levels=(1,),
    num_heads=2,
    transformer_depth=2,
    context_dim=16,
)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNetModel(CONFIG).eval()


def test_recorder_keeps_the_negative_chunks_map_of_the_first_middle_block_only(unet):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 4, 16, 16, generator=gen)  # two chunks of two: positive, negative
    t = torch.full((4,), 500.0)
    context = torch.randn(4, 5, 16, generator=gen)
    call = UNetCall(cond_or_uncond=(0, 1))
    first = unet.middle_block[1].transformer_blocks[0].attn1
    seen = {}

    def keep_q_k(module, args, output):
        seen["q"], seen["k"] = module.to_q(args[0]), module.to_k(args[0])

    hook = first.register_forward_hook(keep_q_k)
    recorder = AttentionRecorder()
    try:
        with torch.no_grad():
            plain = unet(x, t, context)
            recorded = unet(
                x, t, context, self_attention_replacements={RECORDED_BLOCK: recorder}, call=call
            )
    finally:
        hook.remove()
    assert torch.equal(recorded, plain)  # the attention itself is unchanged
    # by hand: softmax(q k^T / sqrt(d)) of items 2, 3 (the negative), per head
    q, k = seen["q"][2:], seen["k"][2:]
    heads, d = 2, q.shape[-1] // 2
    q = q.reshape(2, -1, heads, d).permute(0, 2, 1, 3)
    k = k.reshape(2, -1, heads, d).permute(0, 2, 1, 3)
    by_hand = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    assert recorder.scores.shape == (2 * heads, 64, 64)
    torch.testing.assert_close(recorder.scores, by_hand.reshape(4, 64, 64), rtol=1e-5, atol=1e-6)
    # a call without the negative records nothing new
    recorder.scores = None
    with torch.no_grad():
        unet(
            x,
            t,
            context,
            self_attention_replacements={RECORDED_BLOCK: recorder},
            call=UNetCall(cond_or_uncond=(0, 0)),
        )
    assert recorder.scores is None


def blur_by_hand(image: np.ndarray, sigma: float) -> np.ndarray:
    taps = np.linspace(-4, 4, 9)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(image, ((0, 0), (0, 0), (4, 4), (4, 4)), mode="reflect")
    out = np.zeros_like(image)
    for i in range(image.shape[2]):
        for j in range(image.shape[3]):
            window = padded[:, :, i : i + 9, j : j + 9]
            out[:, :, i, j] = (window * np.outer(kernel, kernel)).sum(axis=(2, 3))
    return out


def test_degraded_x0_is_comfyuis_blur_masked_by_the_attention_map():
    gen = torch.Generator().manual_seed(4)
    x0 = torch.randn(1, 4, 16, 16, generator=gen)
    heads, tokens = 2, 16  # a 4 x 4 token grid: 4 x 4 latent pixels per token
    scores = torch.softmax(torch.randn(heads, tokens, tokens, generator=gen) * 3, dim=-1)
    out = degraded_x0(x0, scores, 1.5)
    received = scores.numpy().mean(0).sum(0)  # attention each key token receives
    marked = (received > 1.0).reshape(4, 4)
    assert 0 < marked.sum() < 16
    mask = np.kron(marked, np.ones((4, 4)))[None, None]
    blurred = blur_by_hand(x0.numpy().astype(np.float64), 1.5)
    expected = blurred * mask + x0.numpy() * (1 - mask)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)


def step_with(denoised, uncond, x, predict_negative):
    return PostCFGStep(
        x, torch.tensor([2.0]), denoised, denoised, uncond, 7.0, None, None, predict_negative
    )


def test_post_cfg_rule_is_comfyuis():
    gen = torch.Generator().manual_seed(5)
    x, denoised, uncond, sag = (torch.randn(1, 4, 8, 8, generator=gen) for _ in range(4))
    recorder = AttentionRecorder(torch.softmax(torch.randn(2, 4, 4, generator=gen), dim=-1))
    given = []

    def predict_negative(noised):
        given.append(noised)
        return sag

    out = SelfAttentionGuided(0.7, 2.0, recorder)(step_with(denoised, uncond, x, predict_negative))
    degraded = degraded_x0(uncond, recorder.scores, 2.0)
    torch.testing.assert_close(given[0], degraded + x - uncond)
    torch.testing.assert_close(out, denoised + (degraded - sag) * 0.7)
    tiny = torch.randn(1, 4, 4, 8, generator=gen)  # too small to pad: unchanged, no call
    step = step_with(tiny, tiny, tiny, predict_negative)
    assert SelfAttentionGuided(0.7, 2.0, recorder)(step) is tiny
    assert len(given) == 1


def test_node_patches_a_clone(runtime):
    from loom.nodes.builtin.loaders import CheckpointLoaderSimple
    from loom.testing import make_context

    model = CheckpointLoaderSimple(ckpt_name="tiny.safetensors").run(make_context(runtime)).model
    patched = SelfAttentionGuidance(model=model, scale=0.5, blur_sigma=2.0).run(None)
    hooks = guidance_hooks_of(patched)
    assert hooks.disable_cfg1_optimization and len(hooks.post_cfg) == 1
    assert isinstance(patched.self_attention_replacements[RECORDED_BLOCK], AttentionRecorder)
    assert model.self_attention_replacements == {} and guidance_hooks_of(model).post_cfg == ()


def test_node_on_a_model_without_unet_attention_names_the_node():
    class NotAUNet:
        name = "flux-dit"

    with pytest.raises(LoomError, match="SelfAttentionGuidance: the model flux-dit"):
        SelfAttentionGuidance(model=NotAUNet(), scale=0.5, blur_sigma=2.0).run(None)


def test_object_info_is_comfyuis(runtime):
    from loom.nodes.object_info import object_info

    entry = object_info(runtime.registry, runtime.environment)["SelfAttentionGuidance"]
    assert entry["input"]["required"] == {
        "model": ["MODEL", {}],
        "scale": ["FLOAT", {"default": 0.5, "min": -2.0, "max": 5.0, "step": 0.01}],
        "blur_sigma": ["FLOAT", {"default": 2.0, "min": 0.0, "max": 10.0, "step": 0.1}],
    }
    assert (entry["output"], entry["category"]) == (["MODEL"], "_for_testing")
    assert entry["display_name"] == "Self-Attention Guidance"
    assert entry["python_module"] == "comfy_extras.nodes_sag"
    assert entry["experimental"] is True
