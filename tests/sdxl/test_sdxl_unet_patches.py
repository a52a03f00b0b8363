"""The UNet patch nodes of loom-sd15 on SDXL (whose UNet is built from loom-sd15's blocks):
txt2img prompts through the real executor change the image deterministically, and ToMe, which
ComfyUI applies at full latent resolution only (where SDXL has no attention), leaves it
bitwise; SelfAttentionGuidance records the first of the middle block's transformer blocks."""

from __future__ import annotations

import pytest
import torch
from loom_sd15.sag import RECORDED_BLOCK, AttentionRecorder
from loom_sd15.unet import UNetCall
from loom_sdxl.unet import SDXLUNetConfig, SDXLUNetModel
from sdxl_markers import needs_samplers
from test_sdxl_workflows import base_prompt, run


def prompt_with(node: str, size: int = 64, **inputs) -> dict:
    prompt = base_prompt()
    prompt["3"]["inputs"]["steps"] = 2
    prompt["5"]["inputs"]["width"] = prompt["5"]["inputs"]["height"] = size
    if node:
        prompt["20"] = {"class_type": node, "inputs": {"model": ["4", 0], **inputs}}
        prompt["3"]["inputs"]["model"] = ["20", 0]
    return prompt


def latent_of(result) -> torch.Tensor:
    return result.values["3"][0][0]["samples"]


DEEP_SHRINK = {
    "block_number": 3,
    "downscale_factor": 2.0,
    "start_percent": 0.0,
    "end_percent": 0.35,
    "downscale_after_skip": True,
    "downscale_method": "bicubic",
    "upscale_method": "bicubic",
}
HYPERTILE = {"tile_size": 32, "swap_size": 2, "max_depth": 1, "scale_depth": False}
CHANGING = [
    ("SelfAttentionGuidance", 64, {"scale": 0.5, "blur_sigma": 2.0}),
    ("PatchModelAddDownscale", 64, DEEP_SHRINK),
    ("HyperTile", 128, HYPERTILE),  # 8 x 8 tokens at depth 1: 2 x 2 tiles
]


@needs_samplers
@pytest.mark.parametrize(("node", "size", "inputs"), CHANGING, ids=[n for n, *_ in CHANGING])
def test_patch_changes_the_sdxl_image_deterministically(runtime, node, size, inputs):
    plain = latent_of(run(runtime, prompt_with("", size)))
    first = latent_of(run(runtime, prompt_with(node, size, **inputs)))
    again = latent_of(run(runtime, prompt_with(node, size, **inputs)))
    assert torch.equal(first, again)
    assert (first - plain).abs().mean() > 1e-3 * plain.abs().mean()


@needs_samplers
def test_tome_leaves_sdxl_alone(runtime):
    plain = latent_of(run(runtime, prompt_with("")))
    assert torch.equal(latent_of(run(runtime, prompt_with("TomePatchModel", ratio=0.5))), plain)


def test_sag_records_the_first_middle_transformer_block_of_sdxl():
    config = SDXLUNetConfig(
        model_channels=32,
        channel_mult=(1, 2),
        transformer_depths=(0, 1),
        middle_depth=2,
        context_dim=32,
        adm_in_channels=64,
    )
    torch.manual_seed(0)
    unet = SDXLUNetModel(config).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=gen)
    t = torch.full((2,), 400.0)
    context = torch.randn(2, 7, 32, generator=gen)
    y = torch.randn(2, 64, generator=gen)
    transformer = next(layer for layer in unet.middle_block if hasattr(layer, "transformer_blocks"))
    inputs = []
    hooks = [
        block.attn1.register_forward_hook(lambda m, a, o: inputs.append(a[0]))
        for block in transformer.transformer_blocks
    ]
    recorder = AttentionRecorder()
    try:
        with torch.no_grad():
            plain = unet(x, t, context, y)
            inputs.clear()
            recorded = unet(
                x,
                t,
                context,
                y,
                self_attention_replacements={RECORDED_BLOCK: recorder},
                call=UNetCall(cond_or_uncond=(1, 0)),
            )
    finally:
        for hook in hooks:
            hook.remove()
    assert torch.equal(recorded, plain)
    attn1 = transformer.transformer_blocks[0].attn1
    q, k = attn1.to_q(inputs[0][:1]), attn1.to_k(inputs[0][:1])  # item 0: the negative
    heads = attn1.heads
    d = q.shape[-1] // heads
    q, k = (t.reshape(1, -1, heads, d).transpose(1, 2) for t in (q, k))
    by_hand = torch.softmax(q @ k.transpose(-1, -2) * d**-0.5, dim=-1).reshape(heads, 16, 16)
    torch.testing.assert_close(recorder.scores, by_hand, rtol=1e-5, atol=1e-6)
