"""Parity with the reference implementations at identical weights, float32: max |diff| < 1e-4.

UNet and VAE against diffusers (weights converted LDM -> diffusers with diffusers' own
single-file converters), the text encoder against transformers' CLIPTextModel used directly.
"""

from __future__ import annotations

import pytest
import torch
from loom_sd15.convert import unet_conversion, vae_conversion
from loom_sd15.unet import UNetConfig, UNetModel
from loom_sd15.vae import AutoencoderKL, VAEConfig

from loom.types import LoadRequest, ModelPart

diffusers = pytest.importorskip("diffusers")
from diffusers.loaders.single_file_utils import (  # noqa: E402
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)

TOL = 1e-4


def _randomized(module: torch.nn.Module, seed: int, std: float = 0.1) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * std)
    return module.eval()


@pytest.mark.parametrize("linear", [False, True], ids=["sd1-conv-proj", "sd2-linear-proj"])
def test_unet_matches_diffusers(linear):
    config = UNetConfig(
        model_channels=32,
        channel_mult=(1, 2, 2),
        num_res_blocks=2,
        attention_levels=(0, 1),
        num_heads=4,
        context_dim=48,
        transformer_depth=2 if linear else 1,
        use_linear_in_transformer=linear,
    )
    ours = _randomized(UNetModel(config), 0)
    checkpoint = unet_conversion().to_checkpoint(ours.state_dict())
    reference = diffusers.UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=2,
        cross_attention_dim=48,
        attention_head_dim=4,
        norm_num_groups=32,
        use_linear_projection=linear,
        transformer_layers_per_block=2 if linear else 1,
    ).eval()
    reference.load_state_dict(
        convert_ldm_unet_checkpoint(checkpoint, reference.config), strict=True
    )
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([999.0, 17.0])
    context = torch.randn(2, 77, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = ours(x, t, context)
        b = reference(x, t, context).sample
    diff = (a - b).abs().max().item()
    print(f"unet max abs diff {diff:.3g}")
    assert diff < TOL


def test_unet_handles_odd_latent_sizes():
    config = UNetConfig(
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(1,),
        num_heads=4,
        context_dim=16,
    )
    model = _randomized(UNetModel(config), 3)
    with torch.no_grad():
        out = model(torch.randn(1, 4, 9, 7), torch.tensor([5.0]), torch.randn(1, 77, 16))
    assert out.shape == (1, 4, 9, 7)


def _vae_pair():
    config = VAEConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=2)
    ours = _randomized(AutoencoderKL(config), 4, std=0.05)
    checkpoint = vae_conversion().to_checkpoint(ours.state_dict())
    reference = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
    ).eval()
    reference.load_state_dict(convert_ldm_vae_checkpoint(checkpoint, reference.config), strict=True)
    return ours, reference


def test_vae_encode_and_decode_match_diffusers():
    ours, reference = _vae_pair()
    image = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        z_ours = ours.encode(image)
        z_ref = reference.encode(image).latent_dist.mean
        x_ours = ours.decode(z_ours)
        x_ref = reference.decode(z_ours).sample
    enc, dec = (z_ours - z_ref).abs().max().item(), (x_ours - x_ref).abs().max().item()
    print(f"vae encode diff {enc:.3g}, decode diff {dec:.3g}")
    assert enc < TOL and dec < TOL


def test_vae_checkpoint_with_linear_attention_weights_loads():
    """Some SD checkpoints store the VAE's mid attention as [C, C] Linear weights."""
    from loom.memory import build_on_meta, load_into_module

    ours, _ = _vae_pair()
    checkpoint = vae_conversion().to_checkpoint(ours.state_dict())
    for key in list(checkpoint):
        if ".mid.attn_1." in key and key.endswith("weight") and checkpoint[key].ndim == 4:
            checkpoint[key] = checkpoint[key][:, :, 0, 0]
    loaded = build_on_meta(AutoencoderKL, ours.config)
    load_into_module(loaded, vae_conversion().view(checkpoint))
    z = torch.randn(1, 4, 4, 4)
    with torch.no_grad():
        assert torch.equal(loaded.decode(z), ours.decode(z))


def test_text_encoder_matches_transformers(tiny_checkpoint):
    """Hidden states through the family's loader equal CLIPTextModel run directly."""
    from loom_sd15.family import SD15Family
    from safetensors.torch import load_file
    from transformers import CLIPTextModel

    from loom.safetensors_header import read_header

    header = read_header(tiny_checkpoint)
    clip = SD15Family().load(header, ModelPart.TEXT_ENCODER, LoadRequest()).clip
    state = load_file(str(tiny_checkpoint))
    prefix = "cond_stage_model.transformer.text_model."
    reference = CLIPTextModel(clip.config.to_transformers()).eval()
    target = reference.state_dict()
    has_text_model = any(k.startswith("text_model.") for k in target)
    reference.load_state_dict(
        {
            ("text_model." if has_text_model else "") + k[len(prefix) :]: v
            for k, v in state.items()
            if k.startswith(prefix)
        },
        strict=True,
    )
    ids = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 49407] + [49407] * 70])
    with torch.no_grad():
        expected = reference(input_ids=ids, output_hidden_states=True)
    from loom_sd15.clip import encode_tokens

    clip._prepare()
    for layer in (None, -2):
        z, pooled = encode_tokens(clip.handle.module, ids.tolist(), layer, 49407)
        want = (
            expected.last_hidden_state
            if layer is None
            else reference.get_submodule(
                ("text_model." if has_text_model else "") + "final_layer_norm"
            )(expected.hidden_states[layer])
        )
        diff = (z - want).abs().max().item()
        print(f"clip layer {layer} diff {diff:.3g}")
        assert diff < TOL
    assert (pooled - expected.pooler_output).abs().max().item() < TOL


def test_fp16_checkpoint_stays_fp16_and_computes_in_fp32(tmp_path):
    from loom_sd15.family import SD15Family
    from loom_sd15.tiny import write_tiny_checkpoint

    from loom.safetensors_header import read_header

    f32 = write_tiny_checkpoint(tmp_path / "a.safetensors", seed=1)
    f16 = write_tiny_checkpoint(tmp_path / "b.safetensors", seed=1, dtype=torch.float16)
    family = SD15Family()
    m32 = family.load(read_header(f32), ModelPart.DIFFUSION_MODEL, LoadRequest()).model
    m16 = family.load(read_header(f16), ModelPart.DIFFUSION_MODEL, LoadRequest()).model
    assert {p.dtype for p in m16.module.parameters()} == {torch.float16}
    x = torch.randn(1, 4, 8, 8)
    cond = {"c_crossattn": torch.randn(1, 77, 32)}
    out32 = m32.apply_model(x, torch.tensor([3.0]), cond)
    out16 = m16.apply_model(x, torch.tensor([3.0]), cond)
    assert out16.dtype == torch.float32
    assert (out16 - out32).abs().max().item() < 5e-2  # only the weights were rounded
