"""SDXL ControlNets: residuals equal diffusers' SDXL ``ControlNetModel`` at identical weights
(diffusers and original layouts), and an SDXL ControlNet on an SD1.5 model is refused with a
message naming the node, the input and the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("loom_sdxl")

TOLERANCE = 1e-4
TEXT = 16  # pooled text width; y = pooled + 6 size embeddings of 8


def reference(seed: int = 0):
    torch.manual_seed(seed)
    model = diffusers.ControlNetModel(
        in_channels=4,
        block_out_channels=(32, 64, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        layers_per_block=2,
        cross_attention_dim=96,
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(1, 1, 2),  # diffusers' name for the head count: 64 per head
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=TEXT + 6 * 8,
        norm_num_groups=32,
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.normal_(1.0, 0.05, generator=generator)
            else:
                fan_in = max(1, param[0].numel()) if param.ndim > 1 else 1
                param.normal_(0.0, min(0.2, fan_in**-0.5), generator=generator)
    return model.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    from loom_controlnet.loader import load_controlnet
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("cnxl")
    save_file(
        {k: v.contiguous() for k, v in reference().state_dict().items()},
        str(folder / "diffusers.safetensors"),
    )
    module = load_controlnet(folder / "diffusers.safetensors").module
    original = {f"control_model.{k}": v.contiguous() for k, v in module.state_dict().items()}
    save_file(original, str(folder / "original.safetensors"))
    return {p.stem: p for p in folder.iterdir()}


@pytest.mark.parametrize("layout", ["diffusers", "original"])
def test_sdxl_residuals_match_diffusers(files, layout):
    from loom_controlnet.loader import load_controlnet

    control = load_controlnet(files[layout])
    assert control.config.family == "sdxl"
    assert control.config.unet.transformer_depths == (0, 1, 2)
    model = reference()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, 8, generator=g)
    hint = torch.rand(2, 3, 64, 64, generator=g)
    t = torch.tensor([999.0, 20.5])
    context = torch.randn(2, 7, 96, generator=g)
    text = torch.randn(2, TEXT, generator=g)
    time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * 2)
    with torch.no_grad():
        down, mid = model(
            x,
            t,
            context,
            hint,
            added_cond_kwargs={"text_embeds": text, "time_ids": time_ids},
            return_dict=False,
        )
        sizes = model.add_time_proj(time_ids.flatten()).reshape(2, -1)
        ours = control.module(x, hint, t, context, torch.cat([text, sizes], dim=-1))
    pairs = [*zip(ours.output, down, strict=True), (ours.middle[0], mid)]
    assert len(pairs) == 10
    assert all(b.abs().max() > 1e-2 for _, b in pairs)
    assert max(float((a - b).abs().max()) for a, b in pairs) <= TOLERANCE


def test_sdxl_controlnet_on_an_sd15_model_is_refused_clearly(files):
    from types import SimpleNamespace

    from loom_controlnet.loader import load_controlnet
    from loom_controlnet.signal import ControlNetSignal

    from loom.errors import LoomError
    from loom.model_sampling import DiscreteEps

    signal = ControlNetSignal(load_controlnet(files["original"]), torch.rand(1, 3, 64, 64))
    x = torch.randn(2, 4, 8, 8)
    sd15_cond = {"c_crossattn": torch.randn(2, 77, 32)}  # no y: not SDXL
    with pytest.raises(LoomError) as caught:
        signal.residuals(
            x, torch.full((2,), 1.0), sd15_cond, SimpleNamespace(model_sampling=DiscreteEps()), 2
        )
    message = str(caught.value)
    assert message.startswith("ControlNetApplyAdvanced: input 'control_net' (original.safetensors)")
    assert "an SDXL ControlNet" in message and "96" in message and "pooled" in message


def test_sdxl_unet_adds_the_residuals_like_diffusers(files):
    """A controlled SDXL UNet call: Loom's SDXL ControlNet + loom-sdxl's UNet against
    diffusers' ControlNetModel + UNet2DConditionModel (additional residuals)."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from loom_controlnet.loader import load_controlnet
    from loom_sd15.convert import unet_conversion
    from loom_sdxl.unet import SDXLUNetModel

    control = load_controlnet(files["original"])
    config = control.config.unet
    ours = SDXLUNetModel(config).eval()
    generator = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for param in ours.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 128),
        layers_per_block=2,
        cross_attention_dim=96,
        attention_head_dim=(1, 1, 2),
        transformer_layers_per_block=(1, 1, 2),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=TEXT + 6 * 8,
        norm_num_groups=32,
    ).eval()
    checkpoint = unet_conversion().to_checkpoint(ours.state_dict())
    unet.load_state_dict(convert_ldm_unet_checkpoint(checkpoint, unet.config), strict=True)
    model = reference()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, 8, generator=g)
    hint = torch.rand(2, 3, 64, 64, generator=g)
    t = torch.tensor([999.0, 20.5])
    context = torch.randn(2, 7, 96, generator=g)
    text = torch.randn(2, TEXT, generator=g)
    time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * 2)
    added = {"text_embeds": text, "time_ids": time_ids}
    with torch.no_grad():
        down, mid = model(x, t, context, hint, added_cond_kwargs=added, return_dict=False)
        expected = unet(
            x,
            t,
            context,
            added_cond_kwargs=added,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        ).sample
        y = torch.cat([text, model.add_time_proj(time_ids.flatten()).reshape(2, -1)], dim=-1)
        got = ours(x, t, context, y, control=control.module(x, hint, t, context, y))
        plain = ours(x, t, context, y)
    assert float((got - plain).abs().max()) > 1e-2
    assert float((got - expected).abs().max()) <= TOLERANCE
