"""MXFP8 SD1.x files (ComfyUI's ``comfy_quant`` format ``mxfp8``, quantised by comfy-kitchen)
load through UNETLoader with their float8 weights and E8M0 block scales kept, compute with
exactly the weights ComfyUI dequantises, and take a LoRA as ComfyUI does."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from loom_sd15.tiny import checkpoint_state, save_checkpoint, tiny_spec
from sd15_unet_runs import load_unet, unet_forward, with_lora, write_layer_lora

from loom.memory import MxFp8Linear
from loom.testing.quantized_files import as_quantization_metadata, mxfp8_state

pytest.importorskip("comfy_kitchen")

PREFIX = "model.diffusion_model."
ATTN = "input_blocks.3.1.transformer_blocks.0.attn1.to_q"


@pytest.fixture
def files(base_dir):
    state = checkpoint_state(tiny_spec(), seed=0)
    unet = {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}
    # attn2.to_k's input width is how the family (and ComfyUI) reads the context size
    stored, dequantized = mxfp8_state(unet, lambda key: "attn2.to_k" not in key)
    folder = base_dir / "models" / "diffusion_models"
    save_checkpoint(folder / "unet-mxfp8.safetensors", stored)
    save_checkpoint(folder / "unet-dequantized.safetensors", dequantized)
    tensors, metadata = as_quantization_metadata(stored)
    save_checkpoint(folder / "unet-mxfp8-metadata.safetensors", tensors, metadata)
    return stored


@pytest.mark.parametrize("name", ["unet-mxfp8.safetensors", "unet-mxfp8-metadata.safetensors"])
def test_an_mxfp8_unet_equals_the_dequantized_one(runtime, files, name):
    model = load_unet(runtime, name)
    reference = load_unet(runtime, "unet-dequantized.safetensors")
    layers = [(n, m) for n, m in model.module.named_modules() if isinstance(m, MxFp8Linear)]
    assert len(layers) > 10
    for key, layer in layers:
        assert layer.weight.dtype == torch.float8_e4m3fn
        assert layer.weight_scale.dtype == torch.float8_e8m0fnu  # the file's F8_E8M0 read
        values = layer.dequantized(torch.device("cpu"), torch.float32)
        assert torch.equal(values, reference.module.get_submodule(key).weight), key
    # equal weights; a CPU GEMM's last bits can depend on where its operands lie in memory
    torch.testing.assert_close(
        unet_forward(runtime, model), unet_forward(runtime, reference), rtol=0, atol=1e-5
    )


@pytest.mark.skipif(importlib.util.find_spec("loom_lora") is None, reason="loom-lora missing")
def test_a_lora_on_an_mxfp8_layer_is_merged_and_requantised(loom_runtime, base_dir, files):
    from comfy_kitchen.tensor.mxfp8 import TensorCoreMXFP8Layout

    runtime = loom_runtime("sd15", "lora", settings={"cpu_only": True})
    model = load_unet(runtime, "unet-mxfp8.safetensors")
    values = model.module.get_submodule(ATTN).dequantized(torch.device("cpu"), torch.float32)
    up, down = write_layer_lora(base_dir, ATTN, *values.shape)
    patched = with_lora(runtime, model)
    runtime.memory.load([patched])
    layer = patched.module.get_submodule(ATTN)
    expected, params = TensorCoreMXFP8Layout.quantize(values + torch.mm(up, down))
    assert torch.equal(layer.weight.view(torch.uint8), expected.view(torch.uint8))
    assert torch.equal(layer.weight_scale.view(torch.uint8), params.scale.view(torch.uint8))
    runtime.memory.unload_all()
    assert torch.equal(layer.weight.view(torch.uint8), files[f"{ATTN}.weight"].view(torch.uint8))
