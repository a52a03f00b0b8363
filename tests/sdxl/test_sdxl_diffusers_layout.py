"""A diffusers-layout SDXL UNet file (``UNet2DConditionModel`` with the ``text_time``
addition embedding, as in a diffusers folder's ``unet/``) loads through the sdxl family and
matches diffusers at identical weights (float32, max |diff| <= 1e-4)."""

from __future__ import annotations

import pytest
import torch
from loom_sd15.unet import timestep_embedding
from loom_sdxl.family import SDXLFamily

from loom.safetensors_header import read_header
from loom.types import LoadRequest, ModelPart

diffusers = pytest.importorskip("diffusers")
from safetensors.torch import save_file  # noqa: E402

TOL = 1e-4


def test_diffusers_sdxl_unet_file_matches_diffusers(tmp_path):
    reference = diffusers.UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=(32, 64, 128),
        layers_per_block=2,
        cross_attention_dim=96,
        attention_head_dim=(1, 1, 2),
        transformer_layers_per_block=(1, 2, 3),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=64 + 6 * 256,
        norm_num_groups=32,
    ).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in reference.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    header = read_header(path)
    family = SDXLFamily()
    assert family.detect(header, ModelPart.DIFFUSION_MODEL) > 0
    model = family.load(header, ModelPart.DIFFUSION_MODEL, LoadRequest()).model

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 16, 16, generator=g)
    t = torch.tensor([999.0, 17.0])
    context = torch.randn(2, 77, 96, generator=g)
    pooled = torch.randn(2, 64, generator=g)
    time_ids = torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024], [832, 1216, 16, 32, 1024, 768]])
    y = torch.cat([pooled, timestep_embedding(time_ids.flatten(), 256).reshape(2, -1)], dim=1)
    with torch.no_grad():
        ours = model.module(x, t, context, y)
        want = reference(
            x, t, context, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}
        ).sample
    diff = (ours - want).abs().max().item()
    print(f"diffusers-layout sdxl unet max abs diff {diff:.3g}")
    assert diff <= TOL
