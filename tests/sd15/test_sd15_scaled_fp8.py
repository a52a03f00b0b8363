"""Scaled-fp8 SD1.x files load as ComfyUI loads them (any family: its ``scaled_fp8`` marker
with ``scale_weight``, or the ``comfy_quant`` / ``weight_scale`` layout): the scaled linear
layers keep their fp8 weights and compute with ``weight * scale``, equal to the same model
dequantised by hand; a LoRA on such a layer recalculates its scale."""

from __future__ import annotations

import importlib.util
import json
import zlib

import pytest
import torch
from loom_sd15.tiny import checkpoint_state, save_checkpoint, tiny_spec
from sd15_unet_runs import load_unet, unet_forward, with_lora, write_layer_lora

from loom.memory import ScaledLinear
from loom.memory.rounding import round_to
from loom.testing import make_context

FP8 = torch.float8_e4m3fn
PREFIX = "model.diffusion_model."
ATTN = "input_blocks.3.1.transformer_blocks.0.attn2.to_k"
CONFIG = torch.tensor(list(b'{"format": "float8_e4m3fn"}'), dtype=torch.uint8)


def _quantize(unet: dict[str, torch.Tensor], old_layout: bool) -> tuple[dict, dict]:
    """``(scaled-fp8 UNet tensors, the same dequantised by hand)``: every linear weight (2-D)
    fp8 with a per-tensor scale, in ComfyUI's old or new layout."""
    stored: dict[str, torch.Tensor] = (
        {"scaled_fp8": torch.empty(0, dtype=FP8)} if old_layout else {}
    )
    dequantized: dict[str, torch.Tensor] = {}
    for key, tensor in unet.items():
        if tensor.ndim != 2 or not key.endswith(".weight"):
            stored[key] = dequantized[key] = tensor
            continue
        layer = key.removesuffix(".weight")
        scale = tensor.abs().max().float() / 448.0
        stored[key] = (tensor / scale).to(FP8)
        dequantized[key] = stored[key].float() * scale
        if old_layout:
            stored[f"{layer}.scale_weight"] = scale
        else:
            stored[f"{layer}.weight_scale"] = scale
            stored[f"{layer}.comfy_quant"] = CONFIG.clone()
    return stored, dequantized


@pytest.fixture
def files(base_dir):
    state = checkpoint_state(tiny_spec(), seed=0)
    unet = {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}
    rest = {k: v for k, v in state.items() if not k.startswith(PREFIX)}
    models = base_dir / "models"
    new, dequantized = _quantize(unet, old_layout=False)
    save_checkpoint(models / "diffusion_models" / "unet-scaled.safetensors", new)
    save_checkpoint(models / "diffusion_models" / "unet-dequantized.safetensors", dequantized)
    old, _ = _quantize(unet, old_layout=True)
    checkpoint = {**rest, **{PREFIX + k: v for k, v in old.items()}}
    save_checkpoint(models / "checkpoints" / "sd15-fp8-scaled.safetensors", checkpoint)
    return new


def test_a_scaled_unet_keeps_fp8_and_equals_the_dequantized_one(runtime, files):
    model = load_unet(runtime, "unet-scaled.safetensors", weight_dtype="fp8_e5m2")
    layer = model.module.get_submodule(ATTN)
    assert isinstance(layer, ScaledLinear) and layer.weight.dtype == FP8
    assert layer.weight_scale.dtype == torch.float32
    assert model.module.input_blocks[0][0].weight.dtype == torch.float32  # a conv: not scaled
    reference = load_unet(runtime, "unet-dequantized.safetensors")
    torch.testing.assert_close(
        unet_forward(runtime, model), unet_forward(runtime, reference), rtol=0, atol=1e-6
    )


def test_an_old_layout_scaled_checkpoint_loads(runtime, files):
    from loom.nodes.builtin.loaders import CheckpointLoaderSimple

    loader = CheckpointLoaderSimple(ckpt_name="sd15-fp8-scaled.safetensors")
    model = loader.run(make_context(runtime)).model
    assert isinstance(model.module.get_submodule(ATTN), ScaledLinear)
    reference = load_unet(runtime, "unet-dequantized.safetensors")
    torch.testing.assert_close(
        unet_forward(runtime, model), unet_forward(runtime, reference), rtol=0, atol=1e-6
    )


def test_an_unsupported_quant_format_names_the_file(runtime, base_dir, files):
    from loom.errors import LoomError

    odd = dict(files)
    odd[f"{ATTN}.comfy_quant"] = torch.tensor(list(b'{"format": "int4_awq"}'), dtype=torch.uint8)
    save_checkpoint(base_dir / "models" / "diffusion_models" / "odd.safetensors", odd)
    with pytest.raises(LoomError) as error:
        load_unet(runtime, "odd.safetensors")
    assert "odd.safetensors" in str(error.value) and "int4_awq" in str(error.value)


@pytest.mark.skipif(importlib.util.find_spec("loom_lora") is None, reason="loom-lora missing")
def test_a_lora_on_a_scaled_unet_layer_recalculates_its_scale(loom_runtime, base_dir, files):
    q, scale = files[f"{ATTN}.weight"], files[f"{ATTN}.weight_scale"]
    up, down = write_layer_lora(base_dir, ATTN, *q.shape)
    runtime = loom_runtime("sd15", "lora", settings={"cpu_only": True})
    model = load_unet(runtime, "unet-scaled.safetensors")
    patched = with_lora(runtime, model)
    runtime.memory.load([patched])
    layer = patched.module.get_submodule(ATTN)
    merged = q.float() * scale + torch.mm(up, down)
    new_scale = merged.abs().max() / 448.0
    seed = zlib.crc32(f"diffusion_model.{ATTN}.weight".encode())
    assert torch.equal(layer.weight_scale, new_scale)
    expected = round_to(merged * (1.0 / new_scale), FP8, seed)
    assert torch.equal(layer.weight.view(torch.uint8), expected.view(torch.uint8))
    runtime.memory.unload_all()
    assert torch.equal(layer.weight_scale, scale)


@pytest.mark.skipif(importlib.util.find_spec("loom_lora") is None, reason="loom-lora missing")
def test_saving_a_loaded_lora_patched_scaled_model_writes_what_saving_it_unloaded_does(
    loom_runtime, base_dir, files
):
    from loom.memory import patched_tensors

    write_layer_lora(base_dir, ATTN, *files[f"{ATTN}.weight"].shape)
    runtime = loom_runtime("sd15", "lora", settings={"cpu_only": True})
    model = load_unet(runtime, "unet-scaled.safetensors")
    patched = with_lora(runtime, model)
    keys = (f"{ATTN}.weight", f"{ATTN}.weight_scale")
    unloaded = patched_tensors(patched)
    # loaded, the layer holds the requantised weight and scale: the stored weight must still
    # be dequantised with the file's scale
    runtime.memory.load([patched])
    loaded = patched_tensors(patched)
    runtime.memory.unload_all()
    assert torch.equal(loaded[keys[1]], unloaded[keys[1]])
    assert torch.equal(loaded[keys[0]].view(torch.uint8), unloaded[keys[0]].view(torch.uint8))


def _metadata_layout(tensors: dict[str, torch.Tensor]) -> tuple[dict, dict[str, str]]:
    """The ``comfy_quant`` file ``tensors`` re-laid as newer ComfyUI files are: no config
    tensors, the layers described in the header's ``_quantization_metadata`` instead."""
    layers = {
        key.removesuffix(".comfy_quant"): json.loads(bytes(value.tolist()))
        for key, value in tensors.items()
        if key.endswith(".comfy_quant")
    }
    rest = {k: v for k, v in tensors.items() if not k.endswith(".comfy_quant")}
    return rest, {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})}


def test_a_file_described_by_quantization_metadata_loads_as_its_comfy_quant_twin(
    runtime, base_dir, files
):
    tensors, metadata = _metadata_layout(files)
    folder = base_dir / "models" / "diffusion_models"
    save_checkpoint(folder / "unet-metadata.safetensors", tensors, metadata)
    model = load_unet(runtime, "unet-metadata.safetensors")
    layer = model.module.get_submodule(ATTN)
    assert isinstance(layer, ScaledLinear) and layer.weight.dtype == FP8
    twin = load_unet(runtime, "unet-scaled.safetensors")
    assert torch.equal(unet_forward(runtime, model), unet_forward(runtime, twin))


def test_an_unsupported_format_in_quantization_metadata_names_file_and_format(
    runtime, base_dir, files
):
    from loom.errors import LoomError

    tensors, metadata = _metadata_layout(files)
    layers = json.loads(metadata["_quantization_metadata"])["layers"]
    layers[ATTN] = {"format": "mxfp8"}
    metadata = {"_quantization_metadata": json.dumps({"layers": layers})}
    folder = base_dir / "models" / "diffusion_models"
    save_checkpoint(folder / "odd-metadata.safetensors", tensors, metadata)
    with pytest.raises(LoomError) as error:
        load_unet(runtime, "odd-metadata.safetensors")
    assert "odd-metadata.safetensors" in str(error.value) and "mxfp8" in str(error.value)
    save_checkpoint(
        folder / "bad-metadata.safetensors", tensors, {"_quantization_metadata": "{not json"}
    )
    with pytest.raises(LoomError, match=r"bad-metadata\.safetensors.*_quantization_metadata"):
        load_unet(runtime, "bad-metadata.safetensors")
