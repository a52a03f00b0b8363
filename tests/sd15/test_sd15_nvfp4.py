"""NVFP4 SD1.x files (ComfyUI's ``comfy_quant`` format ``nvfp4``, quantised by comfy-kitchen)
load through UNETLoader and CheckpointLoaderSimple with their weights packed, compute with
exactly the weights ComfyUI dequantises, and take a LoRA as ComfyUI does (merged into the
dequantised values, quantised to NVFP4 again)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from loom_sd15.tiny import checkpoint_state, save_checkpoint, tiny_spec
from sd15_unet_runs import load_unet, unet_forward, with_lora, write_layer_lora

from loom.memory import NvFp4Linear
from loom.testing import make_context
from loom.testing.quantized_files import as_quantization_metadata, nvfp4_state

pytest.importorskip("comfy_kitchen")

PREFIX = "model.diffusion_model."
BLOCK = "input_blocks.3.1.transformer_blocks.0"
ATTN = f"{BLOCK}.attn1.to_q"


def _quantized(key: str) -> bool:
    # attn2.to_k's input width is how the family (and ComfyUI) reads the context size
    return "attn2.to_k" not in key


@pytest.fixture
def files(base_dir):
    state = checkpoint_state(tiny_spec(), seed=0)
    unet = {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}
    rest = {k: v for k, v in state.items() if not k.startswith(PREFIX)}
    stored, dequantized = nvfp4_state(unet, _quantized)
    models = base_dir / "models"
    save_checkpoint(models / "diffusion_models" / "unet-nvfp4.safetensors", stored)
    save_checkpoint(models / "diffusion_models" / "unet-dequantized.safetensors", dequantized)
    checkpoint = {**rest, **{PREFIX + k: v for k, v in stored.items()}}
    save_checkpoint(models / "checkpoints" / "sd15-nvfp4.safetensors", checkpoint)
    return stored


def test_an_nvfp4_unet_stays_packed_and_equals_the_dequantized_one(runtime, files):
    model = load_unet(runtime, "unet-nvfp4.safetensors")
    layer = model.module.get_submodule(ATTN)
    assert isinstance(layer, NvFp4Linear) and layer.weight.dtype == torch.uint8
    assert torch.equal(layer.weight, files[f"{ATTN}.weight"])
    assert not isinstance(model.module.get_submodule(f"{BLOCK}.attn2.to_k"), NvFp4Linear)
    reference = load_unet(runtime, "unet-dequantized.safetensors")
    _assert_same_weights(model, reference)
    _assert_same_output(unet_forward(runtime, model), unet_forward(runtime, reference))


def _assert_same_weights(model, reference) -> None:
    """Every NVFP4 layer of ``model`` computes with exactly ``reference``'s weight."""
    layers = [(n, m) for n, m in model.module.named_modules() if isinstance(m, NvFp4Linear)]
    assert len(layers) > 10
    for name, layer in layers:
        values = layer.dequantized(torch.device("cpu"), torch.float32)
        assert torch.equal(values, reference.module.get_submodule(name).weight), name


def _assert_same_output(got: torch.Tensor, want: torch.Tensor) -> None:
    # equal weights; a CPU GEMM's last bits can depend on where its operands lie in memory
    # (a memory-mapped file's tensor or a fresh one), hence the float32-rounding tolerance
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_an_nvfp4_checkpoint_loads(runtime, files):
    from loom.nodes.builtin.loaders import CheckpointLoaderSimple

    loader = CheckpointLoaderSimple(ckpt_name="sd15-nvfp4.safetensors")
    model = loader.run(make_context(runtime)).model
    assert isinstance(model.module.get_submodule(ATTN), NvFp4Linear)
    reference = load_unet(runtime, "unet-dequantized.safetensors")
    _assert_same_weights(model, reference)
    _assert_same_output(unet_forward(runtime, model), unet_forward(runtime, reference))


def test_quantization_metadata_equals_comfy_quant(runtime, base_dir, files):
    tensors, metadata = as_quantization_metadata(files)
    folder = base_dir / "models" / "diffusion_models"
    save_checkpoint(folder / "unet-nvfp4-metadata.safetensors", tensors, metadata)
    model = load_unet(runtime, "unet-nvfp4-metadata.safetensors")
    assert isinstance(model.module.get_submodule(ATTN), NvFp4Linear)
    twin = load_unet(runtime, "unet-nvfp4.safetensors")
    assert torch.equal(unet_forward(runtime, model), unet_forward(runtime, twin))


def test_a_block_scale_of_the_wrong_shape_names_file_and_layer(runtime, base_dir, files):
    from loom.errors import LoomError

    odd = dict(files)
    odd[f"{ATTN}.weight_scale"] = odd[f"{ATTN}.weight_scale"][:, :2].contiguous()
    save_checkpoint(base_dir / "models" / "diffusion_models" / "odd.safetensors", odd)
    with pytest.raises(LoomError) as error:
        load_unet(runtime, "odd.safetensors")
    message = str(error.value)
    assert "odd.safetensors" in message and f"{ATTN}.weight_scale" in message
    assert "nvfp4" in message


@pytest.mark.skipif(importlib.util.find_spec("loom_lora") is None, reason="loom-lora missing")
def test_a_lora_on_an_nvfp4_layer_is_merged_and_requantised(loom_runtime, base_dir, files):
    from comfy_kitchen.tensor.nvfp4 import TensorCoreNVFP4Layout

    layer_model = load_unet(loom_runtime("sd15"), "unet-nvfp4.safetensors")
    stored = layer_model.module.get_submodule(ATTN)
    values = stored.dequantized(torch.device("cpu"), torch.float32)
    up, down = write_layer_lora(base_dir, ATTN, *values.shape)
    runtime = loom_runtime("sd15", "lora", settings={"cpu_only": True})
    model = load_unet(runtime, "unet-nvfp4.safetensors")
    patched = with_lora(runtime, model)
    runtime.memory.load([patched])
    layer = patched.module.get_submodule(ATTN)
    # ComfyUI: dequantised in the merge dtype (float32 on a CPU), the LoRA added, quantised
    # to NVFP4 again with a recalculated per-tensor scale
    packed, params = TensorCoreNVFP4Layout.quantize(values + torch.mm(up, down))
    assert torch.equal(layer.weight, packed)
    assert torch.equal(layer.weight_scale.view(torch.uint8), params.block_scale.view(torch.uint8))
    assert torch.equal(layer.weight_scale_2, params.scale)
    runtime.memory.unload_all()
    assert torch.equal(layer.weight, files[f"{ATTN}.weight"])
    assert torch.equal(layer.weight_scale_2, files[f"{ATTN}.weight_scale_2"])


def test_merging_an_nvfp4_unet_with_a_float_one_merges_the_dequantised_weights(
    runtime, base_dir, files
):
    from comfy_kitchen.tensor.nvfp4 import TensorCoreNVFP4Layout

    from loom.nodes.builtin.model_merging import ModelMergeSimple

    state = checkpoint_state(tiny_spec(), seed=5)
    unet = {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}
    save_checkpoint(base_dir / "models" / "diffusion_models" / "other.safetensors", unet)
    first = load_unet(runtime, "unet-nvfp4.safetensors")
    second = load_unet(runtime, "other.safetensors")
    values = first.module.get_submodule(ATTN).dequantized(torch.device("cpu"), torch.float32)
    other = second.module.get_submodule(ATTN).weight.detach().float()
    ctx = make_context(runtime)
    merged = ModelMergeSimple(model1=first, model2=second, ratio=0.3).run(ctx)
    runtime.memory.load([merged])
    layer = merged.module.get_submodule(ATTN)
    # ComfyUI: model1's weight dequantised, scaled by the ratio, model2's added, requantised
    packed, params = TensorCoreNVFP4Layout.quantize(values * 0.3 + 0.7 * other)
    assert torch.equal(layer.weight, packed)
    assert torch.equal(layer.weight_scale_2, params.scale)
    runtime.memory.unload_all()


def _with_lora(runtime, base_dir, model):
    layer = model.module.get_submodule(ATTN)
    write_layer_lora(base_dir, ATTN, layer.out_features, layer.in_features)
    return with_lora(runtime, model)


def _layer_bytes(tensors: dict) -> dict:
    keys = [f"{ATTN}.{name}" for name in ("weight", "weight_scale", "weight_scale_2")]
    return {k: tensors[k].reshape(-1).contiguous().view(torch.uint8) for k in keys}


@pytest.mark.skipif(importlib.util.find_spec("loom_lora") is None, reason="loom-lora missing")
def test_saving_a_loaded_lora_patched_nvfp4_model_writes_what_saving_it_unloaded_does(
    loom_runtime, base_dir, files
):
    from loom.memory import patched_tensors

    runtime = loom_runtime("sd15", "lora", settings={"cpu_only": True})
    patched = _with_lora(runtime, base_dir, load_unet(runtime, "unet-nvfp4.safetensors"))
    unloaded = _layer_bytes(patched_tensors(patched))
    # loaded, the layer holds the requantised weight and scales: the stored weight must still
    # be dequantised with the file's scales
    runtime.memory.load([patched])
    loaded = _layer_bytes(patched_tensors(patched))
    runtime.memory.unload_all()
    assert all(torch.equal(unloaded[k], loaded[k]) for k in unloaded)


@pytest.mark.skipif(importlib.util.find_spec("loom_lora") is None, reason="loom-lora missing")
def test_merging_with_a_loaded_lora_patched_nvfp4_model_uses_its_stored_scales(
    loom_runtime, base_dir, files
):
    from loom.nodes.builtin.model_merging import ModelMergeSimple

    runtime = loom_runtime("sd15", "lora", settings={"cpu_only": True})
    state = checkpoint_state(tiny_spec(), seed=5)
    unet = {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}
    save_checkpoint(base_dir / "models" / "diffusion_models" / "other.safetensors", unet)
    second = _with_lora(runtime, base_dir, load_unet(runtime, "unet-nvfp4.safetensors"))
    first = load_unet(runtime, "other.safetensors")
    ctx = make_context(runtime)
    merged = ModelMergeSimple(model1=first, model2=second, ratio=0.3).run(ctx)
    runtime.memory.load([merged])
    expected = merged.module.get_submodule(ATTN).weight.detach().clone()
    runtime.memory.unload_all()
    # the second model loaded (its layer holding the LoRA's requantised scales) while the
    # merge is computed
    runtime.memory.load([second])
    runtime.memory.load([merged])
    assert second.shared.placement is not None
    got = merged.module.get_submodule(ATTN).weight.detach().clone()
    runtime.memory.unload_all()
    assert torch.equal(got, expected)
