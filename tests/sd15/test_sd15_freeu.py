"""FreeU / FreeU_V2: the output-block rule against a hand computation of ComfyUI's, the
UNet's output-block hook, and an SD1.5 prompt through the executor with a tiny checkpoint."""

from __future__ import annotations

import torch
from loom_sd15.freeu import FreeUPatch, fourier_filter
from loom_sd15.unet import UNetConfig, UNetModel
from sd15_markers import needs_samplers
from test_sd15_cfg_nodes import samples_of
from test_sd15_workflows import image_of, run, txt2img


def comfy_fourier_filter(x, threshold, scale):
    """ComfyUI's Fourier_filter, spelt out: scale the centre of the shifted spectrum."""
    spectrum = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    mask = torch.ones(spectrum.shape)
    h, w = spectrum.shape[-2:]
    mask[..., h // 2 - threshold : h // 2 + threshold, w // 2 - threshold : w // 2 + threshold] = (
        scale
    )
    return torch.fft.ifftn(torch.fft.ifftshift(spectrum * mask, dim=(-2, -1)), dim=(-2, -1)).real


def test_fourier_filter_scales_only_the_lowest_frequencies():
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = fourier_filter(x, 1, 0.2)
    assert torch.allclose(out, comfy_fourier_filter(x, 1, 0.2), atol=1e-6)
    # the mean (the DC term, in the centre square) is scaled; a scale of 1 changes nothing
    assert torch.allclose(out.mean(dim=(-2, -1)), 0.2 * x.mean(dim=(-2, -1)), atol=1e-5)
    assert torch.allclose(fourier_filter(x, 1, 1.0), x, atol=1e-5)


def test_freeu_rules_are_comfyuis():
    gen = torch.Generator().manual_seed(1)
    h, skip = torch.randn(2, 64, 8, 8, generator=gen), torch.randn(2, 64, 8, 8, generator=gen)
    scales = {128: (1.1, 0.9), 64: (1.2, 0.2)}
    out_h, out_skip = FreeUPatch(scales)(h, skip)
    expected = h.clone()
    expected[:, :32] *= 1.2
    assert torch.allclose(out_h, expected) and torch.equal(h[:, 32:], out_h[:, 32:])
    assert torch.allclose(out_skip, comfy_fourier_filter(skip, 1, 0.2), atol=1e-6)

    v2_h, _ = FreeUPatch(scales, adaptive=True)(h, skip)
    mean = h.mean(1).unsqueeze(1)
    low = mean.view(2, -1).min(dim=-1, keepdim=True).values.view(2, 1, 1, 1)
    high = mean.view(2, -1).max(dim=-1, keepdim=True).values.view(2, 1, 1, 1)
    expected = h.clone()
    expected[:, :32] *= (1.2 - 1) * ((mean - low) / (high - low)) + 1
    assert torch.allclose(v2_h, expected, atol=1e-6)

    other = torch.randn(2, 32, 8, 8, generator=gen)  # a width FreeU does not touch
    assert FreeUPatch(scales)(other, other) == (other, other)


def test_unet_calls_output_block_patches_before_each_join():
    config = UNetConfig(
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(),
        context_dim=16,
    )
    torch.manual_seed(0)
    unet = UNetModel(config).eval()
    x, t, context = torch.randn(1, 4, 8, 8), torch.tensor([10.0]), torch.randn(1, 3, 16)
    seen = []

    def record(h, skip):
        seen.append((h.shape[1], skip.shape[1]))
        return h, skip

    with torch.no_grad():
        plain = unet(x, t, context)
        recorded = unet(x, t, context, output_block_patches=(record,))
        doubled = unet(x, t, context, output_block_patches=(lambda h, s: (h, s * 2),))
    assert torch.equal(plain, recorded)
    assert len(seen) == len(unet.output_blocks) and seen[0] == (64, 64)
    assert not torch.allclose(plain, doubled)


@needs_samplers
def test_freeu_nodes_change_the_latent_deterministically(runtime):
    plain = run(runtime, txt2img(steps=2))
    for class_type, b1, b2 in (("FreeU", 1.1, 1.2), ("FreeU_V2", 1.3, 1.4)):
        prompt = txt2img(steps=2)
        knobs = {"b1": b1, "b2": b2, "s1": 0.9, "s2": 0.2}
        prompt["20"] = {"class_type": class_type, "inputs": {"model": ["4", 0], **knobs}}
        prompt["3"]["inputs"]["model"] = ["20", 0]
        first, again = run(runtime, prompt), run(runtime, prompt)
        assert torch.equal(image_of(first), image_of(again))
        changed = (samples_of(first) - samples_of(plain)).abs().mean()
        assert changed > 1e-3 * samples_of(plain).abs().mean(), (class_type, changed)


def test_freeu_on_a_model_without_unet_output_blocks_names_the_node():
    import pytest
    from loom_sd15.freeu import FreeU

    from loom.errors import LoomError

    class NotAUNet:
        name = "flux-dit"

    with pytest.raises(LoomError, match="FreeU: the model flux-dit is not a UNet"):
        FreeU(model=NotAUNet(), b1=1.1, b2=1.2, s1=0.9, s2=0.2).run(None)
