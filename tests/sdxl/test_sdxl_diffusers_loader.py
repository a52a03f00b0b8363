"""``DiffusersLoader`` on a real diffusers SDXL folder through the executor: the tiny SDXL
checkpoint re-saved by diffusers' own converters (``unet/``, ``vae/``, ``text_encoder/``
CLIP-L, ``text_encoder_2/`` CLIP-G with projection) gives ``CheckpointLoaderSimple``'s image
(to float rounding)."""

from __future__ import annotations

import pytest
from sdxl_markers import needs_samplers
from test_sdxl_workflows import base_prompt, run

pytestmark = [needs_samplers]
diffusers = pytest.importorskip("diffusers")
from diffusers.loaders.single_file_utils import (  # noqa: E402
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from safetensors.torch import load_file, save_file  # noqa: E402


def _write_pipeline(checkpoint, folder):
    from loom_sdxl.convert import BASE_CLIP_G_PREFIX, BASE_CLIP_L_PREFIX
    from loom_sdxl.tiny import tiny_spec
    from transformers import CLIPTextModelWithProjection

    spec = tiny_spec()
    state = load_file(str(checkpoint))
    channels = [spec.unet.model_channels * m for m in spec.unet.channel_mult]
    unet_config = {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": channels,
        "layers_per_block": spec.unet.num_res_blocks,
        "cross_attention_dim": spec.unet.context_dim,
        "attention_head_dim": [max(1, c // 64) for c in channels],
        "transformer_layers_per_block": [max(1, d) for d in spec.unet.transformer_depths],
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": spec.unet.adm_in_channels,
    }
    vae_config = {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [32, 32, 64, 64],
        "layers_per_block": 1,
        "latent_channels": 4,
    }
    unet = convert_ldm_unet_checkpoint(state, unet_config)
    vae = convert_ldm_vae_checkpoint(state, vae_config)
    diffusers.UNet2DConditionModel(**unet_config).load_state_dict(unet, strict=True)
    diffusers.AutoencoderKL(**vae_config).load_state_dict(vae, strict=True)
    clip_l = {
        k[len(BASE_CLIP_L_PREFIX) :]: v
        for k, v in state.items()
        if k.startswith(BASE_CLIP_L_PREFIX)
    }
    reference_g = CLIPTextModelWithProjection(spec.clip_g.to_transformers())
    clip_g = convert_open_clip_checkpoint(reference_g, state, prefix=BASE_CLIP_G_PREFIX)
    clip_g = {k: v for k, v in clip_g.items() if not k.endswith("position_ids")}
    for sub, tensors, name in (
        ("unet", unet, "diffusion_pytorch_model.safetensors"),
        ("vae", vae, "diffusion_pytorch_model.safetensors"),
        ("text_encoder", clip_l, "model.safetensors"),
        ("text_encoder_2", clip_g, "model.safetensors"),
    ):
        (folder / sub).mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / sub / name))
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')


def test_diffusers_sdxl_folder_gives_the_checkpoints_image(runtime, base_dir, tiny_files):
    _write_pipeline(tiny_files["base"], base_dir / "models" / "diffusers" / "tiny-sdxl")
    expected = run(runtime, base_prompt()).values["8"][0][0]
    prompt = base_prompt()
    prompt["4"] = {"class_type": "DiffusersLoader", "inputs": {"model_path": "tiny-sdxl"}}
    got = run(runtime, prompt).values["8"][0][0]
    assert got.shape == expected.shape
    # same weights in other layouts (CLIP-G: OpenCLIP's fused attention in the checkpoint,
    # transformers' in the folder): float rounding only (measured 1.4e-6 after 3 steps)
    assert float((got - expected).abs().max()) < 1e-5
