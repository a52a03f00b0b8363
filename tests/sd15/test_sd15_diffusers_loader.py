"""``DiffusersLoader`` on a real diffusers SD1.5 folder through the executor: the tiny
checkpoint re-saved by diffusers' own converters as ``unet/``, ``vae/`` and ``text_encoder/``
gives the very image ``CheckpointLoaderSimple`` gives from the checkpoint."""

from __future__ import annotations

import pytest
import torch
from loom_sd15.tiny import tiny_spec
from sd15_markers import needs_samplers
from test_sd15_workflows import image_of, run, txt2img

pytestmark = [needs_samplers]
diffusers = pytest.importorskip("diffusers")
from diffusers.loaders.single_file_utils import (  # noqa: E402
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)
from safetensors.torch import load_file, save_file  # noqa: E402

CLIP_PREFIX = "cond_stage_model.transformer."


def _write_pipeline(checkpoint, folder):
    spec = tiny_spec()
    state = load_file(str(checkpoint))
    unet_config = {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "cross_attention_dim": spec.unet.context_dim,
        "attention_head_dim": 8,
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
    # diffusers' own modules accept every converted key (strict): the folder is real
    diffusers.UNet2DConditionModel(**unet_config).load_state_dict(unet, strict=True)
    diffusers.AutoencoderKL(**vae_config).load_state_dict(vae, strict=True)
    clip = {k[len(CLIP_PREFIX) :]: v for k, v in state.items() if k.startswith(CLIP_PREFIX)}
    for sub, tensors, name in (
        ("unet", unet, "diffusion_pytorch_model.safetensors"),
        ("vae", vae, "diffusion_pytorch_model.safetensors"),
        ("text_encoder", clip, "model.safetensors"),
    ):
        (folder / sub).mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / sub / name))
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')


def test_diffusers_folder_gives_the_checkpoints_image(runtime, base_dir, tiny_checkpoint):
    _write_pipeline(tiny_checkpoint, base_dir / "models" / "diffusers" / "tiny-sd15")
    expected = image_of(run(runtime, txt2img()))
    prompt = txt2img()
    prompt["4"] = {"class_type": "DiffusersLoader", "inputs": {"model_path": "tiny-sd15"}}
    got = image_of(run(runtime, prompt))
    assert got.shape == expected.shape
    assert torch.equal(got, expected)
