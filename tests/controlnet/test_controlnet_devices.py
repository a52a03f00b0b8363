"""A controlled model call on each compute device (CPU here; CUDA / MPS where present): the
ControlNet and the UNet loaded by a memory manager there give the CPU's result."""

from __future__ import annotations

import pytest
import torch
from device_params import DEVICES, memory_manager

pytestmark = [pytest.mark.parametrize("device", DEVICES), pytest.mark.usefixtures("no_tf32")]


def controlled_call(device: str, tmp_path) -> torch.Tensor:
    from loom_controlnet.loader import load_controlnet
    from loom_controlnet.signal import ControlNetSignal
    from loom_controlnet.tiny import write_tiny_controlnet
    from loom_sd15.model import SD15Model
    from loom_sd15.tiny import tiny_spec
    from loom_sd15.unet import UNetModel

    torch.manual_seed(0)
    model = SD15Model(UNetModel(tiny_spec().unet).eval().requires_grad_(False))
    path = write_tiny_controlnet(tmp_path / f"{device}.safetensors", tiny_spec().unet, seed=1)
    control = load_controlnet(path)
    memory = memory_manager(device)
    memory.load([model, control.handle])
    assert control.handle.compute_target.device.type == device
    g = torch.Generator().manual_seed(2)
    hint = torch.rand(1, 3, 40, 48, generator=g)
    x = torch.randn(2, 4, 8, 8, generator=g).to(device)
    sigma = torch.tensor([3.0, 3.0], device=device)
    cond = {"c_crossattn": torch.randn(2, 5, 32, generator=g).to(device)}
    signal = ControlNetSignal(control, hint, strength=0.8)
    residuals = signal.residuals(x, sigma, cond, model, 2)
    return model.apply_model(x, sigma, {**cond, "control": residuals}).cpu()


def test_controlled_call_matches_the_cpu(device, tmp_path):
    got = controlled_call(device, tmp_path)
    assert torch.isfinite(got).all()
    if device != "cpu":
        torch.testing.assert_close(got, controlled_call("cpu", tmp_path), atol=1e-4, rtol=1e-4)


def flux_controlled_call(device: str, tmp_path, kind: str) -> torch.Tensor:
    """A Flux DiT call with a tiny Flux ControlNet's residuals (InstantX's hint "encoded"
    by a fixed pooling + channel tiling stand-in for a VAE: the device path is what is
    checked here)."""
    from types import SimpleNamespace

    import torch.nn.functional as F
    from loom_controlnet.flux_signal import FluxControlNetSignal
    from loom_controlnet.loader import load_controlnet
    from loom_controlnet.tiny import write_tiny_flux_controlnet
    from loom_flux.dit import FluxTransformer
    from loom_flux.model import FluxModel
    from loom_flux.tiny import dit_state, tiny_spec

    config = tiny_spec().dit
    dit = FluxTransformer(config)
    dit.load_state_dict(dit_state(config, seed=0))
    model = FluxModel(dit.eval().requires_grad_(False))
    path = tmp_path / f"flux-{kind}-{device}.safetensors"
    control = load_controlnet(write_tiny_flux_controlnet(path, config, kind=kind, seed=1))
    memory = memory_manager(device)
    memory.load([model, control.handle])
    assert control.handle.compute_target.device.type == device
    g = torch.Generator().manual_seed(2)
    hint = torch.rand(1, 3, 40, 48, generator=g)
    x = torch.randn(2, 16, 8, 8, generator=g).to(device)
    sigma = torch.tensor([0.7, 0.7], device=device)
    cond = {
        "c_crossattn": torch.randn(2, 5, 32, generator=g).to(device),
        "y": torch.randn(2, 32, generator=g).to(device),
        "guidance": torch.tensor([3.5, 3.5], device=device),
    }
    vae = SimpleNamespace(
        encode=lambda image: F.avg_pool2d(image.movedim(-1, 1), 8).repeat(1, 6, 1, 1)[:, :16]
    )
    signal = FluxControlNetSignal(control, hint, strength=0.8, vae=vae)
    residuals = signal.residuals(x, sigma, cond, model, 2)
    assert len(residuals.input) == 19
    return model.apply_model(x, sigma, {**cond, "control": residuals}).cpu()


@pytest.mark.parametrize("kind", ["instantx", "xlabs"])
def test_flux_controlled_call_matches_the_cpu(device, tmp_path, kind):
    pytest.importorskip("loom_flux")
    got = flux_controlled_call(device, tmp_path, kind)
    assert torch.isfinite(got).all()
    if device != "cpu":
        expected = flux_controlled_call("cpu", tmp_path, kind)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
