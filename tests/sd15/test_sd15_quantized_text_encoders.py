"""A CLIP text encoder stored as scaled fp8, however the file describes it (the header's
``_quantization_metadata``, ``comfy_quant`` tensors, or the old ``scale_weight`` layout), is
refused with one clear message: ComfyUI 0.8 builds CLIP-L/G with plain layers and would run it
without its scales. A file whose ``_quantization_metadata`` names only diffusion-model layers
loads its text encoder untouched."""

from __future__ import annotations

import json

import pytest
import torch
from loom_sd15.tiny import checkpoint_state, save_checkpoint, tiny_spec

from loom.errors import LoomError
from loom.memory import ScaledLinear
from loom.nodes.builtin.loaders import CheckpointLoaderSimple, CLIPLoader
from loom.testing import make_context

FP8 = torch.float8_e4m3fn
CLIP = "cond_stage_model.transformer."
UNET = "model.diffusion_model."
REFUSED = "text encoder is stored as scaled fp8"


def _linear(key: str, prefix: str) -> bool:
    return key.startswith(prefix) and key.endswith(("proj.weight", "fc1.weight", "fc2.weight"))


def quantized(state: dict, prefix: str, layout: str) -> tuple[dict, dict[str, str]]:
    """``(tensors, header metadata)``: the linear weights under ``prefix`` fp8 with a
    per-tensor scale, described as ``layout`` says: ``"metadata"`` (``weight_scale`` tensors,
    the layers named only in ``_quantization_metadata``), ``"comfy_quant"`` (the same with
    ``comfy_quant`` tensors) or ``"old"`` (``scale_weight`` and a ``scaled_fp8`` marker)."""
    tensors, layers = {}, {}
    for key, tensor in state.items():
        if not _linear(key, prefix):
            tensors[key] = tensor
            continue
        layer = key.removesuffix(".weight")
        scale = tensor.abs().max().float() / 448.0
        tensors[key] = (tensor / scale).to(FP8)
        tensors[layer + (".scale_weight" if layout == "old" else ".weight_scale")] = scale
        layers[layer] = {"format": "float8_e4m3fn"}
    if layout == "old":
        tensors[prefix + "scaled_fp8"] = torch.empty(0, dtype=FP8)
    if layout == "comfy_quant":
        for layer, config in layers.items():
            tensors[layer + ".comfy_quant"] = torch.tensor(
                list(json.dumps(config).encode()), dtype=torch.uint8
            )
    if layout != "metadata":
        return tensors, {}
    return tensors, {
        "_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})
    }


@pytest.fixture
def ctx(runtime):
    return make_context(runtime)


def _refusal(ctx, loader) -> str:
    with pytest.raises(LoomError, match=REFUSED) as error:
        loader.run(ctx)
    return str(error.value)


def test_a_scaled_clip_in_a_checkpoint_is_refused_however_it_is_described(base_dir, ctx):
    state = checkpoint_state(tiny_spec(), seed=0)
    messages = {}
    for layout in ("metadata", "comfy_quant", "old"):
        tensors, metadata = quantized(state, CLIP, layout)
        name = f"clip-{layout}.safetensors"
        save_checkpoint(base_dir / "models" / "checkpoints" / name, tensors, metadata)
        message = _refusal(ctx, CheckpointLoaderSimple(ckpt_name=name))
        assert name in message and "CLIP" in message and "scales" in message
        assert f"layer {CLIP}text_model.encoder.layers." in message
        messages[layout] = message.replace(name, "FILE")
    # the metadata-described file is refused exactly as its comfy_quant twin
    assert messages["metadata"] == messages["comfy_quant"]


def test_a_standalone_clip_file_described_by_metadata_is_refused(base_dir, ctx):
    state = checkpoint_state(tiny_spec(), seed=0)
    clip = {k[len(CLIP) :]: v for k, v in state.items() if k.startswith(CLIP)}
    folder = base_dir / "models" / "text_encoders"
    for layout in ("metadata", "comfy_quant"):
        tensors, metadata = quantized(clip, "", layout)
        save_checkpoint(folder / f"clip-l-{layout}.safetensors", tensors, metadata)
        loader = CLIPLoader(clip_name=f"clip-l-{layout}.safetensors", type="stable_diffusion")
        message = _refusal(ctx, loader)
        assert f"clip-l-{layout}.safetensors" in message
        assert "layer text_model.encoder.layers.0." in message


def test_metadata_naming_only_unet_layers_leaves_the_text_encoder_alone(base_dir, ctx):
    state = checkpoint_state(tiny_spec(), seed=0)
    tensors, metadata = quantized(state, UNET, "metadata")
    layers = json.loads(metadata["_quantization_metadata"])["layers"]
    assert layers and all(name.startswith(UNET) for name in layers)
    folder = base_dir / "models" / "checkpoints"
    save_checkpoint(folder / "unet-metadata.safetensors", tensors, metadata)
    parts = CheckpointLoaderSimple(ckpt_name="unet-metadata.safetensors").run(ctx)
    assert any(isinstance(m, ScaledLinear) for m in parts.model.module.modules())
    plain = CheckpointLoaderSimple(ckpt_name="tiny.safetensors").run(ctx).clip
    got = parts.clip.handle.module.state_dict()
    expected = plain.handle.module.state_dict()
    assert got.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(got[key], tensor), key
