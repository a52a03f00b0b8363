"""A scaled-fp8 SDXL UNet (ComfyUI's ``comfy_quant`` / ``weight_scale`` layout) loads through
UNETLoader as ComfyUI loads it: its linear layers keep fp8 weights and compute with
``weight * scale``, equal to the same UNet dequantised by hand. Scaled CLIP encoders, which
ComfyUI would run without their scales, are refused."""

from __future__ import annotations

import json

import pytest
import torch
from loom_sd15.tiny import save_checkpoint
from safetensors.torch import load_file

from loom.errors import LoomError
from loom.memory import ScaledLinear
from loom.testing import make_context

FP8 = torch.float8_e4m3fn
LAYER = "input_blocks.4.1.transformer_blocks.0.attn2.to_k"


def _unet(runtime, name: str):
    from loom.nodes.builtin.loaders import UNETLoader

    return UNETLoader(unet_name=name, weight_dtype="default").run(make_context(runtime))


def _forward(runtime, model) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    unet = model.module
    x = torch.randn(1, 4, 8, 8, generator=g)
    cond = {
        "c_crossattn": torch.randn(1, 5, unet.config.context_dim, generator=g),
        "y": torch.randn(1, unet.config.adm_in_channels, generator=g),
    }
    runtime.memory.load([model])
    out = model.apply_model(x, torch.tensor([2.0]), cond)
    runtime.memory.unload_all()
    return out


def test_a_scaled_sdxl_unet_equals_the_dequantized_one(runtime, base_dir, tiny_files):
    stored, dequantized = {}, {}
    for key, tensor in load_file(str(tiny_files["unet"])).items():
        if tensor.ndim != 2 or not key.endswith(".weight"):
            stored[key] = dequantized[key] = tensor
            continue
        layer = key.removesuffix(".weight")
        scale = tensor.abs().max().float() / 448.0
        stored[key] = (tensor / scale).to(FP8)
        dequantized[key] = stored[key].float() * scale
        stored[f"{layer}.weight_scale"] = scale
        config = b'{"format": "float8_e4m3fn"}'
        stored[f"{layer}.comfy_quant"] = torch.tensor(list(config), dtype=torch.uint8)
    folder = base_dir / "models" / "diffusion_models"
    save_checkpoint(folder / "sdxl-scaled.safetensors", stored)
    save_checkpoint(folder / "sdxl-dequantized.safetensors", dequantized)
    model = _unet(runtime, "sdxl-scaled.safetensors")
    layer = model.module.get_submodule(LAYER)
    assert isinstance(layer, ScaledLinear) and layer.weight.dtype == FP8
    reference = _unet(runtime, "sdxl-dequantized.safetensors")
    torch.testing.assert_close(
        _forward(runtime, model), _forward(runtime, reference), rtol=0, atol=1e-6
    )


def test_a_scaled_sdxl_unet_described_by_quantization_metadata(runtime, base_dir, tiny_files):
    tensors, layers = {}, {}
    for key, tensor in load_file(str(tiny_files["unet"])).items():
        if tensor.ndim != 2 or not key.endswith(".weight"):
            tensors[key] = tensor
            continue
        layer = key.removesuffix(".weight")
        scale = tensor.abs().max().float() / 448.0
        tensors[key] = (tensor / scale).to(FP8)
        tensors[f"{layer}.weight_scale"] = scale
        layers[layer] = {"format": "float8_e4m3fn"}
    folder = base_dir / "models" / "diffusion_models"
    twin = dict(tensors)
    for layer, config in layers.items():
        twin[f"{layer}.comfy_quant"] = torch.tensor(
            list(json.dumps(config).encode()), dtype=torch.uint8
        )
    save_checkpoint(folder / "sdxl-comfy-quant.safetensors", twin)
    metadata = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})}
    save_checkpoint(folder / "sdxl-metadata.safetensors", tensors, metadata)
    model = _unet(runtime, "sdxl-metadata.safetensors")
    layer = model.module.get_submodule(LAYER)
    assert isinstance(layer, ScaledLinear) and layer.weight.dtype == FP8
    reference = _unet(runtime, "sdxl-comfy-quant.safetensors")
    assert torch.equal(_forward(runtime, model), _forward(runtime, reference))


def _metadata_described(state: dict, prefix: str) -> tuple[dict, dict[str, str]]:
    """The linear weights under ``prefix`` fp8 with a ``weight_scale``, the layers named only
    in the header's ``_quantization_metadata`` (no ``comfy_quant`` tensors)."""
    tensors, layers = dict(state), {}
    for key, tensor in state.items():
        if key.startswith(prefix) and key.endswith(("c_fc.weight", "proj.weight", "fc1.weight")):
            layer = key.removesuffix(".weight")
            scale = tensor.abs().max().float() / 448.0
            tensors[key] = (tensor / scale).to(FP8)
            tensors[f"{layer}.weight_scale"] = scale
            layers[layer] = {"format": "float8_e4m3fn"}
    assert layers
    return tensors, {
        "_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})
    }


def test_scaled_clip_encoders_described_by_quantization_metadata_are_refused(
    runtime, base_dir, tiny_files
):
    """ComfyUI builds SDXL's CLIP-L and CLIP-G with plain layers whatever the header says (the
    scales would be dropped): the checkpoint's and the standalone files' are refused, naming
    the file and a scaled layer."""
    from loom.nodes.builtin.loaders import CheckpointLoaderSimple, DualCLIPLoader

    ctx = make_context(runtime)
    state = load_file(str(tiny_files["base"]))
    prefix = "conditioner.embedders.1.model."
    tensors, metadata = _metadata_described(state, prefix)
    save_checkpoint(
        base_dir / "models" / "checkpoints" / "g-metadata.safetensors", tensors, metadata
    )
    with pytest.raises(LoomError, match=r"g-metadata\.safetensors: its CLIP-G text encoder"):
        CheckpointLoaderSimple(ckpt_name="g-metadata.safetensors").run(ctx)

    folder = base_dir / "models" / "text_encoders"
    clip_l = load_file(str(tiny_files["clip_l"]))
    tensors, metadata = _metadata_described(clip_l, "")
    save_checkpoint(folder / "l-metadata.safetensors", tensors, metadata)
    loader = DualCLIPLoader(
        clip_name1="l-metadata.safetensors", clip_name2="clip_g.safetensors", type="sdxl"
    )
    with pytest.raises(
        LoomError, match=r"l-metadata\.safetensors: its CLIP-L text encoder"
    ) as error:
        loader.run(ctx)
    assert "layer text_model.encoder.layers.0." in str(error.value)
