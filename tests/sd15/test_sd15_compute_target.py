"""UNet, CLIP and VAE compute where and in the dtype the memory manager decides, read from
``handle.compute_target``; without a runtime they load through a CPU manager the same way."""

from __future__ import annotations

import pytest
import torch
from loom_sd15.family import SD15Family
from loom_sd15.vae import SD15Vae

from loom.memory import ComputeTarget, DiffPatch, MemoryManager, cpu_device
from loom.safetensors_header import read_header
from loom.types import ModelPart

CPU = torch.device("cpu")


@pytest.fixture
def parts(tiny_checkpoint):
    return SD15Family().load(read_header(tiny_checkpoint), ModelPart.CHECKPOINT)


def _tokens(clip) -> list[list[tuple[int, float]]]:
    """One 77-token chunk: start, three word ids, end padding (no tokenizer files needed)."""
    start, end = clip.config.start_token, clip.config.end_token
    words = [(start, 1.0), (320, 1.0), (1929, 1.2), (530, 1.0)]
    return [words + [(end, 1.0)] * (clip.config.max_positions - len(words))]


def _record_inputs(layer: torch.nn.Module) -> list[tuple[torch.device, torch.dtype]]:
    seen: list[tuple[torch.device, torch.dtype]] = []
    layer.register_forward_pre_hook(lambda _m, args: seen.append((args[0].device, args[0].dtype)))
    return seen


def _submodule(module: torch.nn.Module, suffix: str) -> torch.nn.Module:
    """The submodule whose path ends in ``suffix`` (transformers versions nest CLIP differently)."""
    return next(sub for path, sub in module.named_modules() if path.endswith(suffix))


def test_every_part_computes_as_the_manager_decides(parts):
    memory = MemoryManager(cpu_device(), compute_dtype=torch.bfloat16)
    expected = ComputeTarget(CPU, torch.bfloat16)
    clip = type(parts.clip)(
        parts.clip.handle, parts.clip.config, parts.clip.tokenizer_source, (), memory
    )
    vae = SD15Vae(parts.vae.handle, parts.vae.config, memory)
    model = parts.model
    seen = {
        "unet": _record_inputs(model.module.input_blocks[1][0].in_layers[2]),
        "clip": _record_inputs(_submodule(clip.handle.module, "layers.0.mlp.fc1")),
        "vae": _record_inputs(vae.handle.module.decoder.mid.block_1.conv1),
    }

    z, _pooled = clip.encode_from_tokens(_tokens(clip))
    memory.load([model])
    x0 = model.apply_model(torch.randn(1, 4, 8, 8), torch.tensor([1.0]), {"c_crossattn": z})
    image = vae.decode(x0)

    for handle in (model, clip.handle, vae.handle):
        assert handle.compute_target == memory.target_for(handle) == expected, handle.name
    assert {name: set(inputs) for name, inputs in seen.items()} == {
        name: {(CPU, torch.bfloat16)} for name in seen
    }
    assert z.dtype == x0.dtype == image.dtype == torch.float32  # results leave in fp32
    assert torch.isfinite(image).all()


def test_the_vae_never_computes_in_fp16(parts):
    memory = MemoryManager(cpu_device(), compute_dtype=torch.float16)
    assert memory.target_for(parts.model).dtype == torch.float16
    assert memory.target_for(parts.clip.handle).dtype == torch.float16
    assert memory.target_for(parts.vae.handle).dtype == torch.float32  # ComfyUI's VAE rule
    assert (
        MemoryManager(cpu_device(), compute_dtype=torch.bfloat16).target_for(parts.vae.handle).dtype
        == torch.bfloat16
    )


def test_unloading_returns_the_unet_to_float32_where_its_weights_are(parts):
    model = parts.model
    x, sigma = torch.randn(1, 4, 8, 8), torch.tensor([2.0])
    cond = {"c_crossattn": torch.randn(1, 77, parts.clip.config.hidden_size)}
    assert model.compute_target == ComputeTarget(CPU, torch.float32)
    before = model.apply_model(x, sigma, cond)

    memory = MemoryManager(cpu_device(), compute_dtype=torch.bfloat16)
    memory.load([model])
    assert model.compute_target.dtype == torch.bfloat16
    assert not torch.equal(model.apply_model(x, sigma, cond), before)
    memory.unload_all()

    # no cast layer keeps the bf16 it was given: the answer and the layers agree again
    assert model.compute_target == ComputeTarget(CPU, torch.float32)
    assert model.module.input_blocks[0][0].compute_dtype is None
    assert torch.equal(model.apply_model(x, sigma, cond), before)


def test_parts_without_a_runtime_load_through_a_cpu_manager_with_patches(parts):
    vae = parts.vae
    assert isinstance(vae.memory, MemoryManager) and vae.memory.device.type == "cpu"
    assert isinstance(parts.clip.memory, MemoryManager)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    plain = vae.decode(latent)
    assert vae.handle.is_loaded and vae.handle.compute_target == ComputeTarget(CPU, torch.float32)

    patched = vae.clone()
    weight = patched.handle.module.post_quant_conv.weight
    patched.handle.add_patches({"post_quant_conv.weight": DiffPatch(torch.ones_like(weight))})
    assert not torch.allclose(patched.decode(latent), plain)
    assert torch.equal(vae.decode(latent), plain)  # the patch is reverted for the original
