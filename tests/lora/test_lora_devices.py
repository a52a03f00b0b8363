"""LoRAs on a model loaded on each compute device (CPU here; CUDA / MPS where present): the
patched weights and outputs equal the CPU's, and unloading restores the base bitwise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from device_params import DEVICES, memory_manager
from loom_lora.nodes import LoraLoaderModelOnly
from safetensors.torch import save_file
from test_lora_adapters import ALL_PATCHES

from loom.executor.context import InterruptFlag, RunContext
from loom.memory import ModelHandle

pytestmark = [pytest.mark.parametrize("device", DEVICES), pytest.mark.usefixtures("no_tf32")]


def _bits(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().view(torch.int32) for k, v in module.state_dict().items()}


def _lora_file(folder: Path) -> str:
    """A kohya LoRA for the toy's Linear (alpha 1, rank 2) and 3x3 conv (LoCon, rank 3)."""
    gen = torch.Generator().manual_seed(5)
    tensors = {
        "lora_unet_fc.lora_up.weight": torch.randn(6, 2, generator=gen),
        "lora_unet_fc.lora_down.weight": torch.randn(2, 8, generator=gen),
        "lora_unet_fc.alpha": torch.tensor(1.0),
        "lora_unet_conv.lora_up.weight": torch.randn(6, 3, 1, 1, generator=gen),
        "lora_unet_conv.lora_down.weight": torch.randn(3, 4, 3, 3, generator=gen),
    }
    save_file(tensors, str(folder / "loras" / "toy.safetensors"))
    return "toy.safetensors"


def _outputs(toy, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(9)
    x, image = torch.randn(3, 8, generator=gen), torch.randn(2, 4, 5, 5, generator=gen)
    with torch.no_grad():
        fc = toy.fc(x.to(device))
        conv = F.conv2d(image.to(device), toy.conv.weight, toy.conv.bias, padding=1)
    assert fc.device.type == device and conv.device.type == device
    return fc.cpu(), conv.cpu()


def test_lora_file_on_device_matches_cpu(lora_runtime, toy, device):
    before = _bits(toy)
    base = _outputs(toy, "cpu")
    name = _lora_file(lora_runtime.settings.models_dir)
    ctx = RunContext("1", "p", {}, {}, lora_runtime, InterruptFlag())
    model = LoraLoaderModelOnly(model=ModelHandle(toy), lora_name=name, strength_model=0.8).run(ctx)
    assert set(model.weight_patches) == {"fc.weight", "conv.weight"}

    results = {}
    tolerance = 1e-5
    for where in dict.fromkeys(("cpu", device)):
        mm = memory_manager(where)
        if mm.merge_dtype == torch.float16:  # merged in fp16 there, as ComfyUI does on GPUs
            tolerance = 1e-2
        mm.load([model])
        assert toy.fc.weight.device.type == where and model.compute_target.device.type == where
        results[where] = _outputs(toy, where)
        mm.unload_all()
        assert _bits(toy).keys() == before.keys()
        assert all(torch.equal(_bits(toy)[k], v) for k, v in before.items()), where
    for patched, plain in zip(results["cpu"], base, strict=True):
        assert (patched - plain).abs().max() > 0.1  # the LoRA took effect
    for got, expected in zip(results[device], results["cpu"], strict=True):
        torch.testing.assert_close(got, expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize(
    ("key", "patch"), ALL_PATCHES, ids=["lora", "locon-mid", "loha", "lokr", "dora"]
)
def test_adapter_merged_on_device_matches_cpu(toy, device, key, patch):
    """The merge runs where the model is loaded (in that device's merge dtype: float32 on
    the CPU, float16 on most GPUs, as ComfyUI merges), then stays on the device."""
    original = toy.get_parameter(key)
    merged = {}
    tolerance = 1e-5
    for where in dict.fromkeys(("cpu", device)):
        handle = ModelHandle(toy)
        assert handle.add_patches({key: patch}, 0.7) == [key]
        mm = memory_manager(where)
        if mm.merge_dtype == torch.float16:
            tolerance = 2e-3
        mm.load([handle])
        weight = toy.get_parameter(key)
        assert weight.device.type == where and weight.dtype == torch.float32
        merged[where] = weight.detach().cpu()
        mm.unload_all()
        assert toy.get_parameter(key) is original
    assert not torch.allclose(merged["cpu"], original)
    torch.testing.assert_close(merged[device], merged["cpu"], atol=tolerance, rtol=tolerance)
