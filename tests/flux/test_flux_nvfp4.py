"""NVFP4 Flux DiTs (ComfyUI's ``comfy_quant`` / ``_quantization_metadata`` format ``nvfp4``,
quantised by comfy-kitchen) load through UNETLoader and CheckpointLoaderSimple with their
weights packed, compute with exactly the weights ComfyUI dequantises, and ModelSave writes
them back as ComfyUI does (packed weight, block and per-tensor scales, ``comfy_quant``)."""

from __future__ import annotations

import shutil

import pytest
import torch
from loom_flux.tiny import checkpoint_state, dit_state, save, tiny_spec
from safetensors.torch import load_file

from loom.memory import DiffPatch, NvFp4Linear, write_safetensors
from loom.nodes.builtin.loaders import CheckpointLoaderSimple, UNETLoader
from loom.nodes.builtin.model_save import ModelSave
from loom.testing import make_context
from loom.testing.quantized_files import as_quantization_metadata, nvfp4_state

pytest.importorskip("comfy_kitchen")

PREFIX = "model.diffusion_model."
QKV = "double_blocks.0.img_attn.qkv"


def _in_blocks(key: str) -> bool:
    # the blocks' linears, as ComfyUI's NVFP4 Flux files quantise (the embedders, whose
    # shapes give the model's widths, stay in bf16)
    return "double_blocks." in key or "single_blocks." in key


@pytest.fixture
def files(base_dir):
    stored, dequantized = nvfp4_state(dit_state(tiny_spec().dit, seed=11), _in_blocks)
    folder = base_dir / "models" / "diffusion_models"
    save(stored, folder / "flux-nvfp4.safetensors")
    save(dequantized, folder / "flux-dequantized.safetensors")
    return stored


def _unet(ctx, name: str):
    return UNETLoader(unet_name=name, weight_dtype="default").run(ctx)


def _forward(runtime, model) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    config = model.config
    x = torch.randn(1, config.latent_channels, 8, 12, generator=g)
    cond = {
        "c_crossattn": torch.randn(1, 7, config.context_dim, generator=g),
        "y": torch.randn(1, config.vec_dim, generator=g),
        "guidance": torch.tensor([3.5]),
    }
    runtime.memory.load([model])
    out = model.apply_model(x, torch.tensor([0.7]), cond)
    runtime.memory.unload_all()
    return out


def _assert_equal_models(runtime, model, reference) -> None:
    layers = [(n, m) for n, m in model.module.named_modules() if isinstance(m, NvFp4Linear)]
    assert len(layers) > 5
    for name, layer in layers:
        values = layer.dequantized(torch.device("cpu"), torch.float32)
        assert torch.equal(values, reference.module.get_submodule(name).weight.float()), name
    # equal weights; a CPU GEMM's last bits can depend on where its operands lie in memory
    got, want = _forward(runtime, model), _forward(runtime, reference)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_unet_loader_keeps_nvfp4_packed_and_equals_the_dequantized_model(runtime, files):
    ctx = make_context(runtime)
    model = _unet(ctx, "flux-nvfp4.safetensors")
    qkv = model.module.get_submodule(QKV)
    assert isinstance(qkv, NvFp4Linear) and qkv.weight.dtype == torch.uint8
    assert qkv.weight.shape == (qkv.out_features, qkv.in_features // 2)
    assert not isinstance(model.module.img_in, NvFp4Linear)
    _assert_equal_models(runtime, model, _unet(ctx, "flux-dequantized.safetensors"))


def test_an_all_in_one_checkpoint_described_by_metadata_equals_its_comfy_quant_twin(
    runtime, base_dir
):
    state = checkpoint_state(tiny_spec(), seed=11)
    stored, _ = nvfp4_state(state, lambda key: key.startswith(PREFIX) and _in_blocks(key))
    tensors, metadata = as_quantization_metadata(stored)
    folder = base_dir / "models" / "checkpoints"
    write_safetensors(folder / "aio-nvfp4-metadata.safetensors", tensors, metadata)
    save(stored, folder / "aio-nvfp4.safetensors")
    ctx = make_context(runtime)
    model = CheckpointLoaderSimple(ckpt_name="aio-nvfp4-metadata.safetensors").run(ctx).model
    assert isinstance(model.module.single_blocks[1].linear1, NvFp4Linear)
    twin = CheckpointLoaderSimple(ckpt_name="aio-nvfp4.safetensors").run(ctx).model
    assert torch.equal(_forward(runtime, model), _forward(runtime, twin))


def test_model_save_writes_nvfp4_as_comfyui_does(runtime, base_dir, files):
    from comfy_kitchen.tensor.nvfp4 import TensorCoreNVFP4Layout

    ctx = make_context(runtime)
    model = _unet(ctx, "flux-nvfp4.safetensors")
    values = model.module.get_submodule(QKV).dequantized(torch.device("cpu"), torch.float32)
    diff = torch.randn(values.shape, generator=torch.Generator().manual_seed(2)) * 0.01
    patched = model.clone()
    assert patched.add_patches({f"{QKV}.weight": DiffPatch(diff)}, 1.0) == [f"{QKV}.weight"]
    ModelSave(model=patched).run(ctx)
    saved_file = base_dir / "output" / "diffusion_models" / "ComfyUI_00001_.safetensors"
    saved = {k.removeprefix(PREFIX): v for k, v in load_file(str(saved_file)).items()}
    assert set(saved) == set(files)
    assert bytes(saved[f"{QKV}.comfy_quant"].tolist()) == b'{"format": "nvfp4"}'
    patched_keys = {f"{QKV}.{name}" for name in ("weight", "weight_scale", "weight_scale_2")}
    for key in set(files) - patched_keys:
        assert saved[key].dtype == files[key].dtype, key
        assert torch.equal(saved[key], files[key]), key
    # the patched layer: merged in float32 (a CPU's merge dtype), quantised to NVFP4 again
    packed, params = TensorCoreNVFP4Layout.quantize(values + diff)
    assert torch.equal(saved[f"{QKV}.weight"], packed)
    assert saved[f"{QKV}.weight_scale"].dtype == torch.float8_e4m3fn
    assert torch.equal(
        saved[f"{QKV}.weight_scale"].view(torch.uint8), params.block_scale.view(torch.uint8)
    )
    assert torch.equal(saved[f"{QKV}.weight_scale_2"], params.scale)

    target = base_dir / "models" / "diffusion_models" / saved_file.name
    shutil.copy(saved_file, target)
    again = _unet(ctx, target.name)
    assert isinstance(again.module.get_submodule(QKV), NvFp4Linear)
    runtime.memory.load([patched])
    expected = patched.module.get_submodule(QKV).dequantized(torch.device("cpu"), torch.float32)
    runtime.memory.unload_all()
    got = again.module.get_submodule(QKV).dequantized(torch.device("cpu"), torch.float32)
    assert torch.equal(got, expected)
