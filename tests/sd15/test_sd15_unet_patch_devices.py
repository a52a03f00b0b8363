"""The UNet patches (HyperTile, ToMe, deep shrink, the SAG recorder and blur) on each compute
device (CPU here; CUDA / MPS where present) against the same patches on the CPU: the random
choices are drawn on the CPU, so every device tiles, merges and records alike."""

from __future__ import annotations

import pytest
import torch
from device_params import DEVICES
from loom_sd15.deep_shrink import Downscale, UpscaleToSkip
from loom_sd15.hypertile import HyperTilePatch
from loom_sd15.sag import RECORDED_BLOCK, AttentionRecorder, degraded_x0
from loom_sd15.tome import TokenMergePatch
from loom_sd15.unet import UNetCall, UNetConfig, UNetModel

pytestmark = [pytest.mark.parametrize("device", DEVICES), pytest.mark.usefixtures("no_tf32")]

CONFIG = UNetConfig(
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_levels=(0, 1),
    num_heads=2,
    context_dim=16,
)


def run_patched(device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    unet = UNetModel(CONFIG).eval().to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 16, 16, generator=gen).to(device)
    t = torch.full((2,), 500.0, device=device)
    context = torch.randn(2, 5, 16, generator=gen).to(device)
    call = UNetCall(sigma=torch.tensor([3.0, 3.0], device=device), cond_or_uncond=(0, 1))
    recorder = AttentionRecorder()
    with torch.no_grad():
        out = unet(
            x,
            t,
            context,
            self_attention_token_patches=[HyperTilePatch(4, 2, 1, False), TokenMergePatch(0.3)],
            self_attention_replacements={RECORDED_BLOCK: recorder},
            input_block_patches=[Downscale(1, 2.0, 5.0, 1.0, "bicubic")],
            output_block_patches=[UpscaleToSkip("bilinear")],
            call=call,
        )
        degraded = degraded_x0(x[1:], recorder.scores, 2.0)
    return out.cpu(), recorder.scores.cpu(), degraded.cpu()


@pytest.fixture(scope="module")
def on_cpu():
    return run_patched("cpu")


def test_patches_match_the_cpu(device, on_cpu):
    result = run_patched(device)
    for got, expected in zip(result, on_cpu, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
