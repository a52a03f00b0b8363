"""CheckpointSave, ModelSave and VAESave on a tiny SD1.5 checkpoint loaded by the real
loader: the saved file loads back through CheckpointLoaderSimple / VAELoader with the weights
the inputs computed with (a patched model saves its patched weights), under ComfyUI's names,
counters and metadata."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from loom.errors import LoomError
from loom.memory import DiffPatch
from loom.nodes.builtin.loaders import CheckpointLoaderSimple, CLIPLoader, VAELoader
from loom.nodes.builtin.model_save import CheckpointSave, CLIPSave, ModelSave, VAESave
from loom.testing import make_context

UNET_KEY = "input_blocks.0.0.weight"
CLIP_WEIGHT = "encoder.layers.0.mlp.fc1.weight"


def loaded(runtime, handle) -> dict[str, torch.Tensor]:
    """The handle's weights as its load computes them (patches applied), copied."""
    runtime.memory.load([handle])
    state = {k: v.detach().clone() for k, v in handle.module.state_dict().items()}
    runtime.memory.unload(handle)
    return state


@pytest.fixture
def ctx(runtime):
    return make_context(runtime)


def _reload(base_dir, ctx, saved, loader=CheckpointLoaderSimple, folder="checkpoints"):
    target = base_dir / "models" / folder / saved.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(saved, target)
    if loader is VAELoader:
        return loader(vae_name=saved.name).run(ctx)
    return loader(ckpt_name=saved.name).run(ctx)


def test_checkpoint_save_writes_the_patched_weights_that_load_back(base_dir, ctx, runtime):
    parts = CheckpointLoaderSimple(ckpt_name="tiny.safetensors").run(ctx)
    model, clip, vae = parts.model, parts.clip, parts.vae
    patched_model, patched_clip = model.clone(), clip.clone()
    unet_diff = torch.randn(model.module.state_dict()[UNET_KEY].shape)
    clip_state = clip.handle.module.state_dict()
    (clip_key,) = (key for key in clip_state if key.endswith(CLIP_WEIGHT))
    clip_diff = torch.randn(clip_state[clip_key].shape)
    assert patched_model.add_patches({UNET_KEY: DiffPatch(unet_diff)}, 0.5) == [UNET_KEY]
    assert patched_clip.handle.add_patches({clip_key: DiffPatch(clip_diff)}, 1.0) == [clip_key]

    CheckpointSave(model=patched_model, clip=patched_clip, vae=vae).run(ctx)
    CheckpointSave(model=model, clip=clip, vae=vae).run(ctx)
    folder = base_dir / "output" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [
        "ComfyUI_00001_.safetensors",
        "ComfyUI_00002_.safetensors",
    ]
    saved = folder / "ComfyUI_00001_.safetensors"
    with safe_open(str(saved), "pt") as f:
        metadata = f.metadata()
    assert metadata == {"modelspec.predict_key": "epsilon", "prompt": json.dumps({})}

    again = _reload(base_dir, ctx, saved)
    model2, clip2, vae2 = again.model, again.clip, again.vae
    unet = loaded(runtime, model2)
    expected_unet = loaded(runtime, patched_model)
    assert unet.keys() == expected_unet.keys()
    for key, tensor in expected_unet.items():
        assert torch.equal(unet[key], tensor), key
    original = loaded(runtime, model)
    assert torch.allclose(unet[UNET_KEY], original[UNET_KEY] + 0.5 * unet_diff, atol=1e-6)
    text = loaded(runtime, clip2.handle)
    expected_text = loaded(runtime, patched_clip.handle)
    for key, tensor in expected_text.items():
        assert torch.equal(text[key], tensor), key
    assert not torch.equal(text[clip_key], loaded(runtime, clip.handle)[clip_key])
    for key, tensor in loaded(runtime, vae.handle).items():
        assert torch.equal(loaded(runtime, vae2.handle)[key], tensor), key


def test_model_save_and_vae_save_write_their_part_alone(base_dir, ctx, runtime, tiny_checkpoint):
    parts = CheckpointLoaderSimple(ckpt_name="tiny.safetensors").run(ctx)
    model, vae = parts.model, parts.vae
    ModelSave(model=model, filename_prefix="mine/unet").run(ctx)
    unet_file = base_dir / "output" / "mine" / "unet_00001_.safetensors"
    original = load_file(str(tiny_checkpoint))
    saved = load_file(str(unet_file))
    unet_keys = {k for k in original if k.startswith("model.diffusion_model.")}
    assert set(saved) == unet_keys
    assert all(torch.equal(saved[k], original[k]) for k in unet_keys)

    VAESave(vae=vae).run(ctx)
    vae_file = base_dir / "output" / "vae" / "ComfyUI_vae_00001_.safetensors"
    saved = load_file(str(vae_file))
    prefix = "first_stage_model."
    vae_keys = {k[len(prefix) :] for k in original if k.startswith(prefix)}
    assert set(saved) == vae_keys
    for key in vae_keys:  # attention projections come back as the 1x1 convolutions
        assert torch.equal(saved[key].reshape(original[prefix + key].shape), original[prefix + key])
    reloaded = _reload(base_dir, ctx, vae_file, VAELoader, "vae")
    for key, tensor in loaded(runtime, vae.handle).items():
        assert torch.equal(loaded(runtime, reloaded.handle)[key], tensor), key


def test_saving_something_without_a_checkpoint_layout_names_the_input(ctx):
    with pytest.raises(LoomError, match="ModelSave: input 'model'"):
        ModelSave(model=object()).run(ctx)


def test_clip_save_writes_clip_l_in_its_own_layout(base_dir, ctx, runtime, tiny_checkpoint):
    clip = CheckpointLoaderSimple(ckpt_name="tiny.safetensors").run(ctx).clip
    patched = clip.clone()
    state = clip.handle.module.state_dict()
    (key,) = (k for k in state if k.endswith(CLIP_WEIGHT))
    diff = torch.randn(state[key].shape)
    patched.handle.add_patches({key: DiffPatch(diff)}, 1.0)
    CLIPSave(clip=patched).run(ctx)
    saved_file = base_dir / "output" / "clip" / "ComfyUI_clip_l_00001_.safetensors"
    saved = load_file(str(saved_file))
    prefix = "cond_stage_model.transformer."
    original = load_file(str(tiny_checkpoint))
    assert set(saved) == {
        k[len(prefix) :] for k in original if k.startswith(prefix) and "position_ids" not in k
    }
    assert all(k.startswith("text_model.") for k in saved)
    target = base_dir / "models" / "text_encoders" / saved_file.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(saved_file, target)
    reloaded = CLIPLoader(clip_name=saved_file.name, type="stable_diffusion").run(ctx)
    expected = loaded(runtime, patched.handle)
    got = loaded(runtime, reloaded.handle)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    assert torch.allclose(got[key], state[key] + diff, atol=1e-6)


def test_saving_merges_in_the_devices_merge_dtype_as_loading_does(base_dir, ctx, runtime):
    """ComfyUI loads a model onto its device before saving it, merging its patches there in
    the device's LoRA compute dtype (fp16 on most GPUs): the saved weights are those loading
    on the configured device computes with, even for a handle no one loaded."""
    parts = CheckpointLoaderSimple(ckpt_name="tiny.safetensors").run(ctx)
    model, clip = parts.model.clone(), parts.clip.clone()
    stored = parts.model.module.state_dict()[UNET_KEY].detach().clone()
    unet_diff = torch.randn(stored.shape, generator=torch.Generator().manual_seed(4)) * 1e-3
    model.add_patches({UNET_KEY: DiffPatch(unet_diff)}, 0.7)
    clip_state = clip.handle.module.state_dict()
    (clip_key,) = (key for key in clip_state if key.endswith(CLIP_WEIGHT))
    clip_diff = torch.randn(clip_state[clip_key].shape) * 1e-3
    clip.handle.add_patches({clip_key: DiffPatch(clip_diff)}, 1.0)
    runtime.memory.merge_dtype = torch.float16  # what a GPU that prefers fp16 decides
    assert stored.dtype == torch.float32

    ModelSave(model=model).run(ctx)
    CLIPSave(clip=clip).run(ctx)
    unet = load_file(str(base_dir / "output" / "diffusion_models" / "ComfyUI_00001_.safetensors"))
    text = load_file(str(base_dir / "output" / "clip" / "ComfyUI_clip_l_00001_.safetensors"))
    saved = unet["model.diffusion_model." + UNET_KEY]
    # by hand, ComfyUI's order: cast to fp16, add the scaled difference in fp16, back to fp32
    expected = (stored.half() + 0.7 * unet_diff.half()).float()
    assert torch.equal(saved, expected)
    assert torch.equal(saved, loaded(runtime, model)[UNET_KEY])
    assert not torch.equal(saved, stored + 0.7 * unet_diff)  # what a float32 merge gives
    (text_key,) = (key for key in text if key.endswith(CLIP_WEIGHT))
    assert torch.equal(text[text_key], loaded(runtime, clip.handle)[clip_key])
    assert torch.equal(text[text_key], (clip_state[clip_key].half() + clip_diff.half()).float())

    runtime.memory.merge_dtype = torch.float32  # the CPU's own answer: a float32 merge
    ModelSave(model=model).run(ctx)
    unet = load_file(str(base_dir / "output" / "diffusion_models" / "ComfyUI_00002_.safetensors"))
    assert torch.equal(unet["model.diffusion_model." + UNET_KEY], stored + 0.7 * unet_diff)
