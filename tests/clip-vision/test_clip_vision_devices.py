"""The vision towers and Redux on each compute device (CPU here; CUDA / MPS where present):
the outputs come back on the CPU and equal the CPU's within the compute dtype's precision."""

from __future__ import annotations

import pytest
import torch
from device_params import DEVICES, memory_manager
from loom_clip_vision.model import load_clip_vision
from loom_clip_vision.style import load_style_model

from loom.memory import read_header

pytestmark = [pytest.mark.parametrize("device", DEVICES), pytest.mark.usefixtures("no_tf32")]


def _tolerance(dtype: torch.dtype) -> float:
    return 1e-4 if dtype == torch.float32 else 3e-2


def test_siglip_encode_and_redux_on_device_match_cpu(tiny_files, device):
    image = torch.rand(2, 20, 28, 3, generator=torch.Generator().manual_seed(4))
    tower = tiny_files / "clip_vision" / "tiny-siglip.safetensors"
    redux = tiny_files / "style_models" / "tiny-redux.safetensors"
    cpu_out = load_clip_vision(read_header(tower)).encode_image(image)
    cpu_tokens = load_style_model(read_header(redux)).get_cond(cpu_out)

    vision = load_clip_vision(read_header(tower), memory_manager(device))
    out = vision.encode_image(image)
    style = load_style_model(read_header(redux), memory_manager(device))
    tokens = style.get_cond(out)

    assert vision.handle.compute_target.device.type == device
    assert out.last_hidden_state.device.type == tokens.device.type == "cpu"
    tol = _tolerance(vision.handle.compute_target.dtype)
    torch.testing.assert_close(out.last_hidden_state, cpu_out.last_hidden_state, atol=tol, rtol=tol)
    torch.testing.assert_close(tokens, cpu_tokens, atol=tol * 10, rtol=tol)


def test_clip_encode_on_device_matches_cpu(tiny_files, device):
    image = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(5))
    path = tiny_files / "clip_vision" / "tiny-clip-vision.safetensors"
    cpu_out = load_clip_vision(read_header(path)).encode_image(image)

    vision = load_clip_vision(read_header(path), memory_manager(device))
    out = vision.encode_image(image)

    tol = _tolerance(vision.handle.compute_target.dtype)
    torch.testing.assert_close(out.image_embeds, cpu_out.image_embeds, atol=tol, rtol=tol)
    torch.testing.assert_close(
        out.penultimate_hidden_states, cpu_out.penultimate_hidden_states, atol=tol, rtol=tol
    )
