"""Diffusers-layout UNet and VAE files (``UNet2DConditionModel`` / ``AutoencoderKL`` state
dicts, as in a diffusers folder) load through the sd15 family and match diffusers' own
modules at identical weights (float32, max |diff| < 1e-4)."""

from __future__ import annotations

import pytest
import torch
from loom_sd15.diffusers_layout import ldm_names
from loom_sd15.family import SD15Family

from loom.safetensors_header import read_header
from loom.types import LoadRequest, ModelPart

diffusers = pytest.importorskip("diffusers")
from safetensors.torch import save_file  # noqa: E402

TOL = 1e-4


def _randomized(module: torch.nn.Module, seed: int, std: float = 0.1) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * std)
    return module.eval()


def _save(module: torch.nn.Module, path) -> object:
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return read_header(path)


def test_diffusers_unet_file_matches_diffusers(tmp_path):
    reference = _randomized(
        diffusers.UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            block_out_channels=(32, 64, 64),
            layers_per_block=2,
            cross_attention_dim=48,
            attention_head_dim=8,  # diffusers' name for SD1's 8 heads
            norm_num_groups=32,
        ),
        0,
    )
    header = _save(reference, tmp_path / "diffusion_pytorch_model.safetensors")
    family = SD15Family()
    assert family.detect(header, ModelPart.DIFFUSION_MODEL) > 0
    model = family.load(header, ModelPart.DIFFUSION_MODEL, LoadRequest()).model
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([999.0, 17.0])
    context = torch.randn(2, 77, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model.module(x, t, context)
        want = reference(x, t, context).sample
    diff = (ours - want).abs().max().item()
    print(f"diffusers-layout unet max abs diff {diff:.3g}")
    assert diff < TOL


def test_diffusers_vae_file_matches_diffusers(tmp_path):
    reference = _randomized(
        diffusers.AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            block_out_channels=(32, 64, 64),
            layers_per_block=2,
            latent_channels=4,
            norm_num_groups=32,
        ),
        3,
        std=0.05,
    )
    header = _save(reference, tmp_path / "vae.safetensors")
    family = SD15Family()
    assert family.detect(header, ModelPart.VAE) > 0
    vae = family.load(header, ModelPart.VAE, LoadRequest()).vae
    module = vae.handle.module
    image = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        z = module.encode(image)
        z_ref = reference.encode(image).latent_dist.mean
        x = module.decode(z)
        x_ref = reference.decode(z).sample
    enc, dec = (z - z_ref).abs().max().item(), (x - x_ref).abs().max().item()
    print(f"diffusers-layout vae encode diff {enc:.3g}, decode diff {dec:.3g}")
    assert enc < TOL and dec < TOL


def test_other_layouts_are_not_renamed():
    ldm = {"input_blocks.0.0.weight": (32, 4, 3, 3), "out.2.weight": (4, 32, 3, 3)}
    assert ldm_names(ldm) is None
    # a diffusers ControlNet has down blocks but no up blocks or conv_out: not a UNet
    controlnet = {
        "conv_in.weight": (32, 4, 3, 3),
        "time_embedding.linear_1.weight": (128, 32),
        "down_blocks.0.resnets.0.conv1.weight": (32, 32, 3, 3),
        "controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
    }
    assert ldm_names(controlnet) is None
