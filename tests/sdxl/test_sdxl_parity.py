"""Parity with the reference implementations at identical weights, float32: max |diff| <= 1e-4.

The UNet against diffusers' ``UNet2DConditionModel`` with SDXL's ``text_time`` addition
embedding (weights converted with diffusers' own single-file converter); CLIP-G against
transformers' ``CLIPTextModelWithProjection`` loaded from the OpenCLIP layout by diffusers'
``convert_open_clip_checkpoint``; the SDXL UNet's ADM vector against diffusers' time ids.
"""

from __future__ import annotations

import pytest
import torch
from loom_sd15.convert import unet_conversion
from loom_sd15.unet import timestep_embedding
from loom_sdxl.unet import SDXLUNetConfig, SDXLUNetModel

diffusers = pytest.importorskip("diffusers")
from diffusers.loaders.single_file_utils import (  # noqa: E402
    convert_ldm_unet_checkpoint,
    convert_open_clip_checkpoint,
)

TOL = 1e-4


def _randomized(module: torch.nn.Module, seed: int, std: float = 0.1) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * std)
    return module.eval()


def _reference_unet(config: SDXLUNetConfig, checkpoint: dict, pooled: int):
    levels = len(config.channel_mult)
    down = tuple("CrossAttnDownBlock2D" if d else "DownBlock2D" for d in config.transformer_depths)
    up = tuple(
        "CrossAttnUpBlock2D" if d else "UpBlock2D" for d in reversed(config.transformer_depths)
    )
    channels = tuple(config.model_channels * m for m in config.channel_mult)
    reference = diffusers.UNet2DConditionModel(
        sample_size=16,
        in_channels=config.in_channels,
        out_channels=4,
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=channels,
        layers_per_block=config.num_res_blocks,
        cross_attention_dim=config.context_dim,
        attention_head_dim=tuple(max(1, c // 64) for c in channels),
        transformer_layers_per_block=tuple(max(1, d) for d in config.transformer_depths),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=config.adm_in_channels,
        norm_num_groups=32,
    ).eval()
    assert levels == len(down)
    reference.mid_block.attentions[0].transformer_blocks = reference.mid_block.attentions[
        0
    ].transformer_blocks[: config.middle_depth]
    reference.load_state_dict(
        convert_ldm_unet_checkpoint(checkpoint, reference.config), strict=True
    )
    return reference


@pytest.mark.parametrize(
    "config",
    [
        SDXLUNetConfig(
            model_channels=32,
            channel_mult=(1, 2, 4),
            transformer_depths=(0, 2, 3),
            middle_depth=3,
            context_dim=96,
            adm_in_channels=64 + 6 * 256,
        ),
        SDXLUNetConfig(
            in_channels=9,
            model_channels=32,
            channel_mult=(1, 2, 4),
            transformer_depths=(0, 1, 2),
            middle_depth=2,
            context_dim=96,
            adm_in_channels=64 + 6 * 256,
        ),
    ],
    ids=["base", "inpaint-9ch"],
)
def test_unet_matches_diffusers_text_time(config):
    ours = _randomized(SDXLUNetModel(config), 0)
    checkpoint = unet_conversion().to_checkpoint(ours.state_dict())
    reference = _reference_unet(config, checkpoint, 64)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, config.in_channels, 16, 16, generator=g)
    t = torch.tensor([999.0, 17.0])
    context = torch.randn(2, 77, config.context_dim, generator=g)
    pooled = torch.randn(2, 64, generator=g)
    time_ids = torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024], [832, 1216, 16, 32, 1024, 768]])
    y = torch.cat([pooled, timestep_embedding(time_ids.flatten(), 256).reshape(2, -1)], dim=1)
    with torch.no_grad():
        a = ours(x, t, context, y)
        b = reference(
            x, t, context, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}
        ).sample
    diff = (a - b).abs().max().item()
    print(f"sdxl unet max abs diff {diff:.3g}")
    assert diff <= TOL


def test_clip_g_matches_transformers_from_the_openclip_layout():
    from loom_sd15.clip import build_text_encoder, encode_tokens, materialize_buffers
    from loom_sdxl.convert import BASE_CLIP_G_PREFIX, OpenClipConversion
    from loom_sdxl.tiny import tiny_spec
    from transformers import CLIPTextModelWithProjection

    from loom.memory import build_on_meta, load_into_module

    config = tiny_spec().clip_g
    source = _randomized(build_text_encoder(config), 3, std=0.05)
    conversion = OpenClipConversion("CLIP-G", BASE_CLIP_G_PREFIX)
    openclip = conversion.to_checkpoint(source.state_dict())
    assert f"{BASE_CLIP_G_PREFIX}transformer.resblocks.0.attn.in_proj_weight" in openclip
    assert f"{BASE_CLIP_G_PREFIX}text_projection" in openclip
    # the reference is loaded by diffusers' converter, not ours
    reference = CLIPTextModelWithProjection(config.to_transformers()).eval()
    converted = convert_open_clip_checkpoint(reference, openclip, prefix=BASE_CLIP_G_PREFIX)
    reference.load_state_dict(converted, strict=False)
    ours = build_on_meta(build_text_encoder, config)
    conversion.check(openclip.keys(), ours.state_dict().keys(), "test")
    load_into_module(ours, conversion.view(openclip))
    materialize_buffers(ours)
    ids = [[49406, 320, 1125, 539, 49407] + [0] * 72, [49406, 49407] + [0] * 75]
    with torch.no_grad():
        hidden, last = encode_tokens(ours, ids, -2, 49407, layer_norm_hidden=False)
        pooled = ours.text_projection(last)
        ref = reference(torch.tensor(ids), output_hidden_states=True)
    assert (hidden - ref.hidden_states[-2]).abs().max().item() <= TOL
    assert (pooled - ref.text_embeds).abs().max().item() <= TOL
    ids_t = torch.tensor(ids)
    manual = ref.last_hidden_state[torch.arange(2), (ids_t == 49407).int().argmax(-1)]
    manual = manual @ openclip[f"{BASE_CLIP_G_PREFIX}text_projection"]  # OpenCLIP's x @ W
    assert (pooled - manual).abs().max().item() <= TOL
