"""The ControlNet's residuals equal diffusers' ``ControlNetModel`` at identical weights, loaded
from a diffusers-layout file and from the same weights in the original layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

TOLERANCE = 1e-4


def reference(seed: int = 0):
    """A tiny diffusers ControlNet with SD1.5's structure (the tiny SD1.5 UNet's widths)."""
    torch.manual_seed(seed)
    model = diffusers.ControlNetModel(
        in_channels=4,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # zero convolutions start at zero: give every weight a value
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.normal_(1.0, 0.05, generator=generator)
            else:
                fan_in = max(1, param[0].numel()) if param.ndim > 1 else 1
                param.normal_(0.0, min(0.2, fan_in**-0.5), generator=generator)
    return model.eval()


def inputs():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, 8, generator=g)
    hint = torch.rand(2, 3, 64, 64, generator=g)
    t = torch.tensor([999.0, 20.5])
    context = torch.randn(2, 7, 32, generator=g)
    return x, hint, t, context


def residual_error(module, model) -> float:
    x, hint, t, context = inputs()
    with torch.no_grad():
        down, mid = model(x, t, context, hint, conditioning_scale=1.0, return_dict=False)
        ours = module(x, hint, t, context)
    assert len(ours.output) == len(down) == 4
    pairs = [*zip(ours.output, down, strict=True), (ours.middle[0], mid)]
    assert all(a.shape == b.shape for a, b in pairs)
    assert all(b.abs().max() > 1e-2 for _, b in pairs)  # residuals that carry signal
    return max(float((a - b).abs().max()) for a, b in pairs)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    from loom_controlnet.loader import load_controlnet
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("cn")
    state = {k: v.contiguous() for k, v in reference().state_dict().items()}
    save_file(state, str(folder / "diffusers.safetensors"))
    module = load_controlnet(folder / "diffusers.safetensors").module
    original = {f"control_model.{k}": v.contiguous() for k, v in module.state_dict().items()}
    save_file(original, str(folder / "original.safetensors"))
    bare = {k: v.contiguous() for k, v in module.state_dict().items()}
    save_file(bare, str(folder / "bare.safetensors"))
    return {p.stem: p for p in folder.iterdir()}


@pytest.mark.parametrize("layout", ["diffusers", "original", "bare"])
def test_residuals_match_diffusers(files, layout):
    from loom_controlnet.loader import load_controlnet

    control = load_controlnet(files[layout])
    assert control.config.unet.channel_mult == (1, 2)
    assert control.config.unet.attention_levels == (1,)
    assert control.config.unet.context_dim == 32
    assert residual_error(control.module, reference()) <= TOLERANCE


def test_diffusers_layout_round_trips_through_the_tiny_writer(tmp_path):
    from loom_controlnet.loader import load_controlnet
    from loom_controlnet.tiny import write_tiny_controlnet
    from loom_sd15.tiny import tiny_spec

    unet = tiny_spec().unet
    a = load_controlnet(write_tiny_controlnet(tmp_path / "a.safetensors", unet, seed=4))
    b = load_controlnet(
        write_tiny_controlnet(tmp_path / "b.safetensors", unet, seed=4, layout="diffusers")
    )
    sa, sb = a.module.state_dict(), b.module.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_unet_adds_the_residuals_like_diffusers(files):
    """A whole controlled UNet call: Loom's ControlNet + loom-sd15's UNet against diffusers'
    ControlNetModel + UNet2DConditionModel (down/mid additional residuals)."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from loom_controlnet.loader import load_controlnet
    from loom_sd15.convert import unet_conversion
    from loom_sd15.tiny import tiny_spec
    from loom_sd15.unet import UNetModel

    ours = UNetModel(tiny_spec().unet).eval()
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for param in ours.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    ).eval()
    checkpoint = unet_conversion().to_checkpoint(ours.state_dict())
    unet.load_state_dict(convert_ldm_unet_checkpoint(checkpoint, unet.config), strict=True)
    x, hint, t, context = inputs()
    control = load_controlnet(files["original"]).module
    with torch.no_grad():
        down, mid = reference()(x, t, context, hint, return_dict=False)
        expected = unet(
            x, t, context, down_block_additional_residuals=down, mid_block_additional_residual=mid
        ).sample
        residuals = control(x, hint, t, context)
        got = ours(x, t, context, control=residuals)
        plain = ours(x, t, context)
    assert float((got - plain).abs().max()) > 1e-2
    assert float((got - expected).abs().max()) <= TOLERANCE
