"""Scaled-fp8 Flux DiT files (ComfyUI's ``scaled_fp8`` marker, per-layer ``scale_weight`` and
``scale_input``): loaded through UNETLoader and CheckpointLoaderSimple, weights kept fp8,
dequantised by scale at compute time; equal to the same model dequantised by hand."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from loom_flux.tiny import checkpoint_state, dit_state, save, scaled_fp8_state, tiny_spec

from loom.memory import ScaledLinear
from loom.memory.rounding import key_seed, round_to
from loom.testing import make_context

FP8 = torch.float8_e4m3fn


@pytest.fixture
def scaled_files(base_dir):
    spec = tiny_spec()
    stored, dequantized = scaled_fp8_state(dit_state(spec.dit, seed=11))
    folder = base_dir / "models" / "diffusion_models"
    save(stored, folder / "tiny-flux-fp8-scaled.safetensors")
    save(dequantized, folder / "tiny-flux-dequantized.safetensors")
    return stored, dequantized


def _unet(runtime, name: str, weight_dtype: str = "default"):
    from loom.nodes.builtin.loaders import UNETLoader

    return UNETLoader(unet_name=name, weight_dtype=weight_dtype).run(make_context(runtime))


def _forward(runtime, model) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    config = model.config
    x = torch.randn(1, config.latent_channels, 8, 12, generator=g)
    context = torch.randn(1, 7, config.context_dim, generator=g)
    cond = {
        "c_crossattn": context,
        "y": torch.randn(1, config.vec_dim, generator=g),
        "guidance": torch.tensor([3.5]),
    }
    runtime.memory.load([model])
    out = model.apply_model(x, torch.tensor([0.7]), cond)
    runtime.memory.unload_all()
    return out


def test_unet_loader_keeps_fp8_and_equals_the_dequantized_model(runtime, scaled_files):
    scaled = _unet(runtime, "tiny-flux-fp8-scaled.safetensors")
    qkv = scaled.module.double_blocks[0].img_attn.qkv
    assert isinstance(qkv, ScaledLinear) and qkv.weight.dtype == FP8
    # the scale as the file stores it (ComfyUI keeps a [1]-shaped one as it is)
    assert qkv.weight_scale.shape == (1,) and qkv.weight_scale.dtype == torch.float32
    assert not isinstance(scaled.module.img_in, ScaledLinear)  # no scale in the file
    assert scaled.module.img_in.weight.dtype == torch.bfloat16
    reference = _unet(runtime, "tiny-flux-dequantized.safetensors")
    got, want = _forward(runtime, scaled), _forward(runtime, reference)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_weight_dtype_does_not_requantize_a_scaled_file(runtime, scaled_files):
    scaled = _unet(runtime, "tiny-flux-fp8-scaled.safetensors", weight_dtype="fp8_e4m3fn")
    qkv = scaled.module.double_blocks[0].img_attn.qkv
    assert qkv.weight_scale.dtype == torch.float32  # the scales are not rounded to fp8
    reference = _unet(runtime, "tiny-flux-dequantized.safetensors")
    torch.testing.assert_close(
        _forward(runtime, scaled), _forward(runtime, reference), rtol=0, atol=1e-6
    )


def test_checkpoint_loader_reads_a_scaled_fp8_all_in_one_file(runtime, base_dir, scaled_files):
    from loom.nodes.builtin.loaders import CheckpointLoaderSimple

    prefix = "model.diffusion_model."
    state = checkpoint_state(tiny_spec(), seed=11)
    stored, _ = scaled_fp8_state(state, prefix)
    save(stored, base_dir / "models" / "checkpoints" / "tiny-flux-aio-fp8-scaled.safetensors")
    loader = CheckpointLoaderSimple(ckpt_name="tiny-flux-aio-fp8-scaled.safetensors")
    model = loader.run(make_context(runtime)).model
    assert isinstance(model.module.single_blocks[1].linear1, ScaledLinear)
    reference = _unet(runtime, "tiny-flux-dequantized.safetensors")
    torch.testing.assert_close(
        _forward(runtime, model), _forward(runtime, reference), rtol=0, atol=1e-6
    )


def test_a_scale_for_a_layer_the_model_lacks_is_a_clear_error(runtime, base_dir, scaled_files):
    from loom.errors import LoomError

    stored, _ = scaled_files
    broken = {**stored, "double_blocks.0.img_attn.norm.scale_weight": torch.ones(())}
    save(broken, base_dir / "models" / "diffusion_models" / "odd-scaled.safetensors")
    with pytest.raises(LoomError) as error:
        _unet(runtime, "odd-scaled.safetensors")
    message = str(error.value)
    assert "odd-scaled.safetensors" in message
    assert "double_blocks.0.img_attn.norm.scale_weight" in message


@pytest.mark.skipif(importlib.util.find_spec("loom_lora") is None, reason="loom-lora missing")
def test_lora_save_extracts_from_the_dequantised_difference(runtime, base_dir):
    from loom_lora.extract import LoraSave
    from safetensors.torch import load_file

    from loom.nodes.builtin.model_merging import ModelMergeSubtract

    spec = tiny_spec()
    first, _ = scaled_fp8_state(dit_state(spec.dit, seed=11))
    second, _ = scaled_fp8_state(dit_state(spec.dit, seed=12))
    folder = base_dir / "models" / "diffusion_models"
    save(first, folder / "first.safetensors")
    save(second, folder / "second.safetensors")
    ctx = make_context(runtime)
    diff_model = ModelMergeSubtract(
        model1=_unet(runtime, "first.safetensors"),
        model2=_unet(runtime, "second.safetensors"),
        multiplier=1.0,
    ).run(ctx)
    diff_model = diff_model[0] if isinstance(diff_model, tuple) else diff_model
    LoraSave(filename_prefix="x/lora", rank=2, lora_type="standard", model_diff=diff_model).run(ctx)
    lora = load_file(str(base_dir / "output" / "x" / "lora_00001_.safetensors"))
    key = "double_blocks.0.img_attn.proj"
    scale_1 = first[f"{key}.scale_weight"].reshape(())
    scale_2 = second[f"{key}.scale_weight"].reshape(())
    # the difference ModelMergeSubtract computes with: both weights dequantised, subtracted,
    # requantised with a scale recalculated from the difference (ComfyUI 0.7+), rounded as
    # ComfyUI rounds a patched fp8 weight
    merged = first[f"{key}.weight"].float() * scale_1 - second[f"{key}.weight"].float() * scale_2
    new_scale = merged.abs().max() / 448.0
    stored = round_to(merged * (1.0 / new_scale), FP8, key_seed(f"diffusion_model.{key}.weight"))
    diff = stored.float() * new_scale
    matrix = diff.float()
    u, s, vh = torch.linalg.svd(matrix)
    up, down = u[:, :2] * s[:2], vh[:2]
    high = torch.quantile(torch.cat([up.flatten(), down.flatten()]), 0.99)
    expected = up.clamp(-high, high) @ down.clamp(-high, high)
    written = lora[f"diffusion_model.{key}.lora_up.weight"].float()
    written = written @ lora[f"diffusion_model.{key}.lora_down.weight"].float()
    torch.testing.assert_close(written, expected.half().float(), rtol=0, atol=2e-3)
    assert not any(k.endswith(("scale.diff", "comfy_quant.diff")) for k in lora)


def test_an_unsupported_quantisation_format_is_a_clear_error(runtime, base_dir, scaled_files):
    from loom.errors import LoomError

    stored, _ = scaled_files
    layer = "double_blocks.0.img_attn.proj"
    config = torch.tensor(list(b'{"format": "int4_awq"}'), dtype=torch.uint8)
    odd = {k: v for k, v in stored.items() if k != "scaled_fp8"} | {f"{layer}.comfy_quant": config}
    save(odd, base_dir / "models" / "diffusion_models" / "int4.safetensors")
    with pytest.raises(LoomError) as error:
        _unet(runtime, "int4.safetensors")
    assert "int4.safetensors" in str(error.value)
    assert f"{layer}.comfy_quant" in str(error.value) and "'int4_awq'" in str(error.value)


def _metadata_and_comfy_quant(stored: dict, prefix: str = "") -> tuple[dict, dict, dict]:
    """An old-layout file ``stored`` in ComfyUI's new layout twice: ``(tensors, header
    metadata)`` describing the layers in ``_quantization_metadata``, and the same with
    ``comfy_quant`` tensors instead."""
    tensors, layers = {}, {}
    for key, value in stored.items():
        if key == f"{prefix}scaled_fp8" or key.endswith(".scale_input"):
            continue  # the marker, and input scales of 1.0 ComfyUI drops
        if key.endswith(".scale_weight"):
            layer = key.removesuffix(".scale_weight")
            tensors[f"{layer}.weight_scale"] = value
            layers[layer] = {"format": "float8_e4m3fn"}
        else:
            tensors[key] = value
    twin = dict(tensors)
    for layer, config in layers.items():
        twin[f"{layer}.comfy_quant"] = torch.tensor(
            list(json.dumps(config).encode()), dtype=torch.uint8
        )
    metadata = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})}
    return tensors, metadata, twin


def test_a_dit_described_by_quantization_metadata_equals_its_comfy_quant_twin(
    runtime, base_dir, scaled_files
):
    from loom.memory import write_safetensors

    tensors, metadata, twin = _metadata_and_comfy_quant(scaled_files[0])
    folder = base_dir / "models" / "diffusion_models"
    write_safetensors(folder / "flux-metadata.safetensors", tensors, metadata)
    save(twin, folder / "flux-comfy-quant.safetensors")
    model = _unet(runtime, "flux-metadata.safetensors")
    qkv = model.module.double_blocks[0].img_attn.qkv
    assert isinstance(qkv, ScaledLinear) and qkv.weight.dtype == FP8
    reference = _unet(runtime, "flux-comfy-quant.safetensors")
    assert torch.equal(_forward(runtime, model), _forward(runtime, reference))


def test_an_all_in_one_checkpoint_names_its_layers_with_the_prefix(runtime, base_dir):
    from loom.memory import write_safetensors
    from loom.nodes.builtin.loaders import CheckpointLoaderSimple

    prefix = "model.diffusion_model."
    stored, _ = scaled_fp8_state(checkpoint_state(tiny_spec(), seed=11), prefix)
    tensors, metadata, twin = _metadata_and_comfy_quant(stored, prefix)
    assert all(
        name.startswith(prefix) for name in json.loads(metadata["_quantization_metadata"])["layers"]
    )
    folder = base_dir / "models" / "checkpoints"
    write_safetensors(folder / "aio-metadata.safetensors", tensors, metadata)
    save(twin, folder / "aio-comfy-quant.safetensors")
    ctx = make_context(runtime)
    model = CheckpointLoaderSimple(ckpt_name="aio-metadata.safetensors").run(ctx).model
    assert isinstance(model.module.single_blocks[1].linear1, ScaledLinear)
    reference = CheckpointLoaderSimple(ckpt_name="aio-comfy-quant.safetensors").run(ctx).model
    assert torch.equal(_forward(runtime, model), _forward(runtime, reference))


T5_PREFIX = "text_encoders.t5xxl.transformer."


def _t5_layer(name: str) -> bool:
    return not name.endswith(
        ("q.weight", "k.weight", "v.weight", "o.weight", "wi_0.weight", "wi_1.weight", "wo.weight")
    )


def test_a_checkpoints_t5_described_by_quantization_metadata_equals_its_comfy_quant_twin(
    runtime, base_dir
):
    """ComfyUI applies the header's layers to the whole file and builds T5's quantised layers
    from the configs under ``text_encoders.t5xxl.transformer.`` (``t5_xxl_detect``)."""
    from loom.memory import write_safetensors
    from loom.nodes.builtin.loaders import CheckpointLoaderSimple

    stored, _ = scaled_fp8_state(checkpoint_state(tiny_spec(), seed=11), T5_PREFIX, _t5_layer)
    tensors, metadata, twin = _metadata_and_comfy_quant(stored, T5_PREFIX)
    layers = json.loads(metadata["_quantization_metadata"])["layers"]
    assert layers and all(name.startswith(T5_PREFIX + "encoder.block.") for name in layers)
    folder = base_dir / "models" / "checkpoints"
    write_safetensors(folder / "t5-metadata.safetensors", tensors, metadata)
    save(twin, folder / "t5-comfy-quant.safetensors")
    ctx = make_context(runtime)
    encoders = []
    for name in ("t5-metadata.safetensors", "t5-comfy-quant.safetensors"):
        t5 = CheckpointLoaderSimple(ckpt_name=name).run(ctx).clip.t5.module
        q = t5.encoder.block[0].layer[0].SelfAttention.q
        assert isinstance(q, ScaledLinear) and q.weight.dtype == FP8
        encoders.append(t5)
    ids = torch.randint(0, 64, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = (t5(input_ids=ids).last_hidden_state for t5 in encoders)
    assert torch.equal(a, b)


def test_a_checkpoints_clip_l_described_by_quantization_metadata_is_refused(runtime, base_dir):
    """ComfyUI builds Flux's CLIP-L with plain layers: the scales would be dropped."""
    from loom.errors import LoomError
    from loom.memory import write_safetensors
    from loom.nodes.builtin.loaders import CheckpointLoaderSimple

    prefix = "text_encoders.clip_l.transformer."
    stored, _ = scaled_fp8_state(checkpoint_state(tiny_spec(), seed=11), prefix, lambda n: False)
    tensors, metadata, _ = _metadata_and_comfy_quant(stored, prefix)
    folder = base_dir / "models" / "checkpoints"
    write_safetensors(folder / "clip-l-metadata.safetensors", tensors, metadata)
    with pytest.raises(LoomError, match=r"clip-l-metadata\.safetensors.*scaled fp8") as error:
        CheckpointLoaderSimple(ckpt_name="clip-l-metadata.safetensors").run(make_context(runtime))
    assert f"layer {prefix}" in str(error.value)
