"""A LoRA on a tiny SD1.x UNet merged in float16, as ComfyUI merges on most GPUs
(``lora_compute_dtype``): the weight is cast to float16, the LoRA's ``up @ down`` is computed
and scaled in float32, cast to float16 and added there; an fp16 file keeps fp16 weights and
an fp8 one is then rounded stochastically. The test asks the manager for the float16 merge
dtype a CUDA device answers (no GPU needed); the ``gpu`` test runs the real CUDA path."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from sd15_lora_files import LAYERS, LORA_FILE, RANK, UNET_FILE, write_lora, write_tiny_unet

from loom.memory.rounding import key_seed, round_to
from loom.testing import make_context

ALPHA = 1.0
STRENGTH = 0.8

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("loom_lora") is None, reason="loom-lora missing"
)


@pytest.fixture
def runtime(tmp_path, loom_runtime):
    """A diffusion-model-only tiny SD1.5 file in fp16 and a LoRA for two of its layers."""
    unet = write_tiny_unet(tmp_path, torch.float16)
    write_lora(tmp_path, unet, torch.float16, alpha=ALPHA)
    return loom_runtime("sd15", "lora", settings={"cpu_only": True})


def _comfyui_merge(base, up, down, merge, device="cpu"):
    """ComfyUI's patch_weight_to_device + LoRAAdapter.calculate_weight, step by step."""
    weight = base.to(device, merge, copy=True)  # cast_to_device(..., lora_compute_dtype)
    diff = torch.mm(up.to(device).float().flatten(1), down.to(device).float().flatten(1))
    diff = diff.reshape(base.shape)  # intermediate dtype float32
    weight += ((STRENGTH * (ALPHA / RANK)) * diff).type(weight.dtype)
    return weight


def _load(runtime, weight_dtype, merge):
    from loom_lora.nodes import LoraLoaderModelOnly

    from loom.nodes.builtin.loaders import UNETLoader

    ctx = make_context(runtime)
    model = UNETLoader(unet_name=UNET_FILE, weight_dtype=weight_dtype).run(ctx)
    patched = LoraLoaderModelOnly(model=model, lora_name=LORA_FILE, strength_model=STRENGTH).run(
        ctx
    )
    stored = {key: model.module.get_parameter(key).detach().clone() for _, key in LAYERS}
    runtime.memory.compute_dtype = torch.float16  # what ComfyUI keeps an fp16 SD1.5 in on a GPU
    runtime.memory.merge_dtype = merge
    runtime.memory.load([patched])
    return model, patched, stored


def _lora(runtime):
    from loom.memory import open_safetensors

    return open_safetensors(runtime.settings.base_directory / "models" / "loras" / LORA_FILE)


def test_an_fp16_unet_merges_in_fp16_bit_for_bit(runtime):
    _, patched, stored = _load(runtime, "default", torch.float16)
    lora = _lora(runtime)
    for name, key in LAYERS:
        up, down = lora[f"{name}.lora_up.weight"], lora[f"{name}.lora_down.weight"]
        expected = _comfyui_merge(stored[key], up, down, torch.float16)
        weight = patched.module.get_parameter(key)
        assert weight.dtype == torch.float16
        assert torch.equal(weight.view(torch.int16), expected.view(torch.int16)), key
        # a float32 merge rounded once differs: the merge dtype is not a detail
        once = _comfyui_merge(stored[key], up, down, torch.float32).half()
        assert not torch.equal(weight.view(torch.int16), once.view(torch.int16)), key
    runtime.memory.unload_all()


def test_an_fp8_unet_merges_in_fp16_then_rounds_with_comfyuis_seeds(runtime):
    fp8 = torch.float8_e4m3fn
    model, patched, stored = _load(runtime, "fp8_e4m3fn", torch.float16)
    lora = _lora(runtime)
    for name, key in LAYERS:
        up, down = lora[f"{name}.lora_up.weight"], lora[f"{name}.lora_down.weight"]
        merged = _comfyui_merge(stored[key], up, down, torch.float16)
        expected = round_to(merged, fp8, key_seed(f"diffusion_model.{key}"))
        weight = patched.module.get_parameter(key)
        assert weight.dtype == fp8
        assert torch.equal(weight.view(torch.uint8), expected.view(torch.uint8)), key
    runtime.memory.unload_all()
    for _, key in LAYERS:  # unloading restores the stored fp8 weights
        restored = model.module.get_parameter(key).view(torch.uint8)
        assert torch.equal(restored, stored[key].view(torch.uint8))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_an_fp16_unet_merges_as_comfyui_does_there(tmp_path, loom_runtime):
    from loom_lora.nodes import LoraLoaderModelOnly

    from loom.memory import merge_dtype_for
    from loom.nodes.builtin.loaders import UNETLoader

    unet = write_tiny_unet(tmp_path, torch.float16)
    name, key = LAYERS[0]
    lora = write_lora(tmp_path, unet, torch.float16, alpha=ALPHA, layers=LAYERS[:1])
    up, down = lora[f"{name}.lora_up.weight"], lora[f"{name}.lora_down.weight"]
    rt = loom_runtime("sd15", "lora", settings={"compute_dtype": "fp16"})
    assert rt.memory.device.type == "cuda"
    merge = merge_dtype_for(rt.memory.device)
    assert rt.memory.merge_dtype == merge
    ctx = make_context(rt)
    model = UNETLoader(unet_name=UNET_FILE, weight_dtype="default").run(ctx)
    patched = LoraLoaderModelOnly(model=model, lora_name=LORA_FILE, strength_model=STRENGTH).run(
        ctx
    )
    rt.memory.load([patched])
    expected = _comfyui_merge(unet[key], up, down, merge, "cuda").half()
    weight = patched.module.get_parameter(key)
    assert weight.device.type == "cuda"
    assert torch.equal(weight.view(torch.int16), expected.view(torch.int16))
    rt.memory.unload_all()
