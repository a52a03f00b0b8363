"""Control-LoRA files: the ControlNet is the sampled model's UNet encoder, with the file's
full tensors in place and ``up @ down`` added where the file has low-rank pairs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from loom.errors import LoomError
from loom.memory import MemoryManager, write_safetensors
from loom.memory.devices import simulated_device
from loom.model_sampling import DiscreteEps

RANK = 2


def tiny_model(seed: int = 0):
    from loom_sd15.model import SD15Model
    from loom_sd15.tiny import tiny_spec
    from loom_sd15.unet import UNetModel

    torch.manual_seed(seed)
    unet = UNetModel(tiny_spec().unet).eval().requires_grad_(False)
    return SD15Model(unet)


@pytest.fixture
def control_lora(tmp_path):
    from loom_controlnet.tiny import control_lora_state
    from loom_sd15.tiny import tiny_spec

    weights = control_lora_state(tiny_spec().unet, rank=RANK)
    return write_safetensors(tmp_path / "control-lora-canny.safetensors", weights), weights


def test_control_lora_is_the_model_encoder_plus_the_file(control_lora):
    from loom_controlnet.control_lora import ControlLoraModel, ControlLoraSignal
    from loom_controlnet.loader import load_controlnet
    from loom_controlnet.model import ControlNet, ControlNetConfig
    from loom_controlnet.tiny import CONTROL_LORA_LAYERS
    from loom_sd15.tiny import tiny_spec

    path, weights = control_lora
    loaded = load_controlnet(path)
    assert isinstance(loaded, ControlLoraModel) and loaded.hint_channels == 3
    model = tiny_model()
    # the rule, written out: base weights, the file's full tensors, base + up @ down
    expected = ControlNet(ControlNetConfig(tiny_spec().unet)).eval()
    base = model.module.state_dict()
    state = {}
    for key in expected.state_dict():
        layer = key.rpartition(".")[0]
        if key in weights:
            state[key] = weights[key]
        elif layer in CONTROL_LORA_LAYERS and key.endswith(".weight"):
            up, down = weights[f"{layer}.up"], weights[f"{layer}.down"]
            state[key] = base[key] + (up.flatten(1) @ down.flatten(1)).reshape(base[key].shape)
        else:
            state[key] = base[key]
    expected.load_state_dict(state)
    hint = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    signal = ControlLoraSignal(loaded, hint)
    assert signal.models(model) == []  # built from the loaded model's weights, not before
    manager = MemoryManager(simulated_device(2**30), budget_bytes=2**30)
    manager.load([model])  # as its sampler loads it
    (handle,) = signal.models(model)  # built from the model, loaded by its sampler
    assert handle is signal.signal_for(model).control.handle
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=g)
    sigma = torch.full((2,), 2.0)
    context = torch.randn(2, 5, 32, generator=g)
    got = signal.residuals(x, sigma, {"c_crossattn": context}, model, 2)
    ms = model.model_sampling
    with torch.no_grad():
        want = expected(ms.calculate_input(sigma, x), hint, ms.timestep(sigma), context)
    for a, b in zip((*got.output, *got.middle), (*want.output, *want.middle), strict=True):
        torch.testing.assert_close(a, b)
    assert signal.signal_for(model) is signal.signal_for(model)  # built once per model


def test_control_lora_for_another_model_is_refused(control_lora):
    from loom_controlnet.control_lora import ControlLoraSignal
    from loom_controlnet.loader import load_controlnet

    signal = ControlLoraSignal(load_controlnet(control_lora[0]), torch.rand(1, 3, 64, 64))
    stranger = SimpleNamespace(model_sampling=DiscreteEps())
    with pytest.raises(
        LoomError, match=r"ControlNetApplyAdvanced: input 'control_net' \(control-lora-canny"
    ):
        signal.residuals(torch.zeros(1, 4, 8, 8), torch.ones(1), {}, stranger, 1)
