"""Loading tiny Flux files through the generic loader nodes, and what goes wrong clearly."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from loom.errors import LoomError
from loom.testing import make_context


def _node(runtime, class_type, **inputs):
    cls = runtime.registry.nodes[class_type].source_class
    return cls(**inputs).run(make_context(runtime))


def test_plugin_is_installed_and_registers_family_and_nodes(runtime):
    registry = runtime.registry
    assert "flux" in registry.families
    for name in ("CLIPTextEncodeFlux", "FluxGuidance", "ModelSamplingFlux", "EmptySD3LatentImage"):
        assert name in registry.nodes


def test_clip_text_encode_flux_prompts_have_no_default(runtime):
    """ComfyUI declares clip_l and t5xxl without a default: /object_info sends none."""
    required = runtime.registry.nodes["CLIPTextEncodeFlux"].input_types(None)["required"]
    for name in ("clip_l", "t5xxl"):
        assert required[name] == ["STRING", {"multiline": True, "dynamicPrompts": True}]


@pytest.mark.parametrize("weight_dtype", ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"])
def test_unet_loader_reads_config_and_keeps_stored_dtype(runtime, weight_dtype):
    model = _node(
        runtime, "UNETLoader", unet_name="tiny-flux.safetensors", weight_dtype=weight_dtype
    )
    config = model.config
    assert (config.hidden_size, config.num_heads, config.depth, config.depth_single) == (
        32,
        2,
        2,
        2,
    )
    assert config.guidance_embed and config.in_channels == 64
    expected = {
        "default": torch.float32,
        "fp8_e4m3fn": torch.float8_e4m3fn,
        "fp8_e4m3fn_fast": torch.float8_e4m3fn,
        "fp8_e5m2": torch.float8_e5m2,
    }[weight_dtype]
    # every tensor, biases and norm scales included, as ComfyUI rounds them
    assert {p.dtype for p in model.module.parameters()} == {expected}


def test_fp8_weights_compute_as_rounded_fp32(runtime):
    full = _node(runtime, "UNETLoader", unet_name="tiny-flux.safetensors", weight_dtype="default")
    fp8 = _node(runtime, "UNETLoader", unet_name="tiny-flux.safetensors", weight_dtype="fp8_e4m3fn")
    rounded = type(full.module)(full.config)
    rounded.load_state_dict(
        {k: v.to(torch.float8_e4m3fn).float() for k, v in full.module.state_dict().items()}
    )
    x = torch.randn(1, 16, 4, 6, generator=torch.Generator().manual_seed(0))
    args = (torch.tensor([0.7]), torch.randn(1, 5, 32), torch.randn(1, 32), torch.tensor([3.5]))
    with torch.no_grad():
        a = fp8.module(x, *args)
        b = rounded(x, *args)
    assert torch.allclose(a, b, atol=1e-5)


def test_diffusers_layout_loads_like_comfy_layout(runtime, base_dir):
    from loom_flux.convert import to_diffusers

    path = base_dir / "models" / "diffusion_models"
    state = load_file(str(path / "tiny-flux.safetensors"))
    save_file(to_diffusers(state), str(path / "tiny-flux-diffusers.safetensors"))
    a = _node(runtime, "UNETLoader", unet_name="tiny-flux.safetensors", weight_dtype="default")
    b = _node(
        runtime, "UNETLoader", unet_name="tiny-flux-diffusers.safetensors", weight_dtype="default"
    )
    sa, sb = a.module.state_dict(), b.module.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("order", ["t5-first", "clip-first"])
def test_dual_clip_loader_flux_encodes_t5_tokens_and_clip_pooled(runtime, order):
    names = ["tiny-t5.safetensors", "tiny-clip-l.safetensors"]
    if order == "clip-first":
        names.reverse()
    clip = _node(runtime, "DualCLIPLoader", clip_name1=names[0], clip_name2=names[1], type="flux")
    cond = _node(
        runtime, "CLIPTextEncodeFlux", clip=clip, clip_l="a cat", t5xxl="a cat", guidance=2.5
    )
    tensor, options = cond[0]
    assert tensor.shape == (1, 256, 32)  # padded to 256 tokens
    assert options["pooled_output"].shape == (1, 32)
    assert options["guidance"] == 2.5
    long = clip.encode_t5(" ".join(["word"] * 300))
    assert long.shape[1] == 301  # never truncated


def test_t5_given_as_clip_l_is_a_clear_error(runtime):
    with pytest.raises(LoomError) as error:
        _node(
            runtime,
            "DualCLIPLoader",
            clip_name1="tiny-t5.safetensors",
            clip_name2="tiny-t5.safetensors",
            type="flux",
        )
    assert "tiny-t5.safetensors" in str(error.value) and "CLIP-L" in str(error.value)


def test_vae_loader_gives_a_16_channel_vae(runtime):
    vae = _node(runtime, "VAELoader", vae_name="tiny-ae.safetensors")
    image = torch.rand(1, 32, 24, 3, generator=torch.Generator().manual_seed(0))
    latent = vae.encode(image)
    assert latent.shape == (1, 16, 4, 3)
    assert vae.decode(latent).shape == (1, 32, 24, 3)


def test_all_in_one_checkpoint_loads_every_part(runtime):
    parts = _node(runtime, "CheckpointLoaderSimple", ckpt_name="tiny-flux-aio.safetensors")
    assert parts.model.config.guidance_embed
    assert parts.vae.latent_channels == 16
    cond = parts.clip.encode("a cat")
    assert cond[0][0].shape == (1, 256, 32)


def test_sdxl_like_file_in_unet_loader_is_not_claimed(runtime, base_dir):
    state = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}
    save_file(state, str(base_dir / "models" / "diffusion_models" / "other.safetensors"))
    with pytest.raises(LoomError) as error:
        _node(runtime, "UNETLoader", unet_name="other.safetensors", weight_dtype="default")
    assert "other.safetensors" in str(error.value)


def test_truncated_file_is_a_clear_error(runtime, base_dir):
    path = base_dir / "models" / "diffusion_models"
    data = (path / "tiny-flux.safetensors").read_bytes()
    (path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(LoomError) as error:
        _node(runtime, "UNETLoader", unet_name="cut.safetensors", weight_dtype="default")
    assert "cut.safetensors" in str(error.value) and "truncated" in str(error.value)
