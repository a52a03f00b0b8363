"""LoraLoader / LoraLoaderModelOnly on a toy model: clones, stacking, strengths, reports."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from loom_lora.nodes import LoraLoader, LoraLoaderModelOnly
from safetensors.torch import save_file

import loom
from loom.executor.context import InterruptFlag, RunContext
from loom.memory import ModelHandle
from loom.types import AdapterKeyMap


class ToyClip:
    """A CLIP-like value: a handle on a text encoder, cloned with it."""

    def __init__(self, handle: ModelHandle) -> None:
        self.handle = handle

    def clone(self) -> ToyClip:
        return ToyClip(self.handle.clone())


class ToyClipFamily:
    """Answers adapter_key_map for ToyClip the way a family plugin would."""

    @loom.hookimpl
    def adapter_key_map(self, model, kind):
        if kind == "clip" and isinstance(model, ToyClip):
            return AdapterKeyMap(model.handle, {"lora_te_text_fc": "weight"})
        return None


@pytest.fixture
def runtime(lora_runtime):
    lora_runtime.host.register(ToyClipFamily(), "toy_clip_family")
    return lora_runtime


@pytest.fixture
def ctx(runtime) -> RunContext:
    return RunContext("1", "p", {}, {}, runtime, InterruptFlag())


@pytest.fixture
def text_encoder():
    torch.manual_seed(1)
    return torch.nn.Module().requires_grad_(False)


def write_lora(runtime, name: str, tensors: dict[str, torch.Tensor]) -> str:
    save_file(tensors, str(Path(runtime.settings.models_dir) / "loras" / name))
    return name


def kohya(
    layer: str, rows: int, cols: int, rank: int = 2, seed: int = 0
) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        f"{layer}.lora_up.weight": torch.randn(rows, rank, generator=gen),
        f"{layer}.lora_down.weight": torch.randn(rank, cols, generator=gen),
        f"{layer}.alpha": torch.tensor(1.0),
    }


def delta(tensors: dict[str, torch.Tensor], layer: str) -> torch.Tensor:
    up, down = tensors[f"{layer}.lora_up.weight"], tensors[f"{layer}.lora_down.weight"]
    return (up.flatten(1) @ down.flatten(1)).reshape(up.shape[0], *down.shape[1:]) * (
        float(tensors[f"{layer}.alpha"]) / down.shape[0]
    )


def loaded_weight(memory, handle: ModelHandle, key: str) -> torch.Tensor:
    memory.load([handle])
    value = handle.module.get_parameter(key).detach().clone()
    memory.unload(handle)
    return value


def clip_handle() -> ToyClip:
    torch.manual_seed(2)
    return ToyClip(ModelHandle(torch.nn.Linear(4, 4).requires_grad_(False)))


def test_lora_loader_patches_clones_and_leaves_the_inputs_alone(runtime, ctx, toy):
    tensors = kohya("lora_unet_fc", 6, 8) | kohya("lora_te_text_fc", 4, 4, seed=1)
    name = write_lora(runtime, "a.safetensors", tensors)
    model, clip = ModelHandle(toy), clip_handle()
    base = toy.fc.weight.detach().clone()
    out = LoraLoader(
        model=model, clip=clip, lora_name=name, strength_model=0.5, strength_clip=-1.0
    ).run(ctx)
    assert out.model is not model and out.model.is_clone(model)
    assert out.clip is not clip and out.clip.handle.is_clone(clip.handle)
    assert not model.weight_patches and not clip.handle.weight_patches
    memory = runtime.memory
    got = loaded_weight(memory, out.model, "fc.weight")
    assert torch.allclose(got, base + 0.5 * delta(tensors, "lora_unet_fc"), atol=1e-5)
    clip_base = clip.handle.module.weight.detach().clone()
    got_clip = loaded_weight(memory, out.clip.handle, "weight")
    assert torch.allclose(got_clip, clip_base - delta(tensors, "lora_te_text_fc"), atol=1e-5)
    assert torch.equal(loaded_weight(memory, model, "fc.weight"), base)  # base unpatched


def test_no_weight_is_copied_at_load(runtime, ctx, toy):
    name = write_lora(runtime, "a.safetensors", kohya("lora_unet_fc", 6, 8))
    pointer = toy.fc.weight.data_ptr()
    [model] = [LoraLoaderModelOnly(model=ModelHandle(toy), lora_name=name).run(ctx)]
    assert model.weight_patches and toy.fc.weight.data_ptr() == pointer


def test_strength_zero_returns_the_inputs_unchanged(runtime, ctx, toy):
    name = write_lora(runtime, "a.safetensors", kohya("lora_unet_fc", 6, 8))
    model, clip = ModelHandle(toy), clip_handle()
    out = LoraLoader(
        model=model, clip=clip, lora_name=name, strength_model=0.0, strength_clip=0.0
    ).run(ctx)
    assert out.model is model and out.clip is clip


def test_two_loras_stack(runtime, ctx, toy):
    a, b = kohya("lora_unet_fc", 6, 8, seed=3), kohya("diffusion_model.conv", 6, 4 * 9, seed=4)
    b["diffusion_model.conv.lora_down.weight"] = b["diffusion_model.conv.lora_down.weight"].reshape(
        2, 4, 3, 3
    )
    b["diffusion_model.conv.lora_up.weight"] = b["diffusion_model.conv.lora_up.weight"][
        :, :, None, None
    ]
    c = kohya("fc", 6, 8, seed=5)  # the generic layout: the module's own name
    for name, tensors in (("a.safetensors", a), ("b.safetensors", b), ("c.safetensors", c)):
        write_lora(runtime, name, tensors)
    model = ModelHandle(toy)
    for name, strength in (
        ("a.safetensors", 1.0),
        ("b.safetensors", 2.0),
        ("c.safetensors", -0.25),
    ):
        model = LoraLoaderModelOnly(model=model, lora_name=name, strength_model=strength).run(ctx)
    fc = loaded_weight(runtime.memory, model, "fc.weight")
    conv = loaded_weight(runtime.memory, model, "conv.weight")
    assert torch.allclose(
        fc, toy.fc.weight + delta(a, "lora_unet_fc") - 0.25 * delta(c, "fc"), atol=1e-5
    )
    assert torch.allclose(conv, toy.conv.weight + 2.0 * delta(b, "diffusion_model.conv"), atol=1e-5)


def test_unknown_keys_are_reported_with_count_and_examples(runtime, ctx, toy, caplog):
    tensors = kohya("lora_unet_fc", 6, 8) | kohya("lora_unet_not_a_layer", 6, 8)
    tensors["something.else"] = torch.zeros(1)
    name = write_lora(runtime, "a.safetensors", tensors)
    with caplog.at_level(logging.INFO, logger="loom_lora"):
        LoraLoaderModelOnly(model=ModelHandle(toy), lora_name=name).run(ctx)
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "4 keys match no weight" in warning.getMessage()
    assert "lora_unet_not_a_layer.lora_up.weight" in warning.getMessage()
    assert "something.else" in warning.getMessage()


def test_model_only_loader_does_not_warn_about_text_encoder_keys(runtime, ctx, toy, caplog):
    tensors = kohya("lora_unet_fc", 6, 8) | kohya("lora_te_text_fc", 4, 4)
    name = write_lora(runtime, "a.safetensors", tensors)
    with caplog.at_level(logging.INFO, logger="loom_lora"):
        LoraLoaderModelOnly(model=ModelHandle(toy), lora_name=name).run(ctx)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "3 keys for parts not being patched were skipped" in caplog.text


def test_missing_file_is_a_clear_error(ctx, toy):
    with pytest.raises(loom.LoomError, match=r"filename 'missing\.safetensors' not found"):
        LoraLoaderModelOnly(model=ModelHandle(toy), lora_name="missing.safetensors").run(ctx)


def test_a_value_no_family_maps_is_a_clear_error(runtime, ctx):
    class Opaque:
        def clone(self):
            return self

    name = write_lora(runtime, "a.safetensors", kohya("lora_unet_fc", 6, 8))
    with pytest.raises(loom.LoomError, match="no installed plugin maps LoRA keys onto this MODEL"):
        LoraLoaderModelOnly(model=Opaque(), lora_name=name).run(ctx)


def test_node_wire_format_matches_comfyui(runtime):
    registry = runtime.registry
    loader = registry.nodes["LoraLoader"]
    assert loader.display_name == "Load LoRA" and loader.category == "loaders"
    info = loader.input_types(registry) if hasattr(loader, "input_types") else None
    assert info is None or "lora_name" in str(info)
    assert "LoraLoaderModelOnly" in registry.nodes
    assert set(registry.weight_adapters) == {"lora", "loha", "lokr", "diff"}
