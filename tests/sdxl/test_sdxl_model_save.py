"""CheckpointSave, ModelSave, CLIPSave and VAESave on tiny SDXL base and refiner checkpoints
loaded by the real loader: the saved file holds the original single-file key set (plus
ComfyUI's CLIP-L ``position_ids``) and loads back through CheckpointLoaderSimple /
DualCLIPLoader with exactly the (LoRA-patched) weights; OpenCLIP bigG is checked against
diffusers' own single-file converter; the modelspec metadata is ComfyUI's."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from loom.errors import LoomError
from loom.memory import DiffPatch
from loom.nodes.builtin.loaders import CheckpointLoaderSimple, DualCLIPLoader
from loom.nodes.builtin.model_save import CheckpointSave, CLIPSave, ModelSave, VAESave
from loom.testing import make_context

G_KEY = "clip_g.text_model.encoder.layers.1.self_attn.k_proj.weight"
L_KEY = "clip_l.text_model.encoder.layers.0.mlp.fc1.weight"
L_POSITIONS = "conditioner.embedders.0.transformer.text_model.embeddings.position_ids"


def loaded(runtime, handle) -> dict[str, torch.Tensor]:
    runtime.memory.load([handle])
    state = {k: v.detach().clone() for k, v in handle.module.state_dict().items()}
    runtime.memory.unload(handle)
    return state


def assert_same(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(got[key], tensor), key


def _into_models(base_dir, saved, folder: str):
    target = base_dir / "models" / folder / saved.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(saved, target)
    return saved.name


@pytest.fixture
def ctx(runtime):
    return make_context(runtime)


def _patched(parts):
    model, clip = parts.model.clone(), parts.clip.clone()
    unet_state = model.module.state_dict()
    unet_key = next(k for k in unet_state if k.endswith("attn2.to_k.weight"))
    unet_diff = torch.randn(unet_state[unet_key].shape)
    assert model.add_patches({unet_key: DiffPatch(unet_diff)}, 0.5) == [unet_key]
    state = clip.handle.module.state_dict()
    keys = [key for key in (G_KEY, L_KEY) if key in state]
    patches = {key: DiffPatch(torch.randn(state[key].shape)) for key in keys}
    assert clip.handle.add_patches(patches, 1.0) == keys
    return model, clip


def test_base_checkpoint_save_round_trips_patched_weights(base_dir, ctx, runtime, tiny_files):
    parts = CheckpointLoaderSimple(ckpt_name="sdxl.safetensors").run(ctx)
    model, clip = _patched(parts)
    CheckpointSave(model=model, clip=clip, vae=parts.vae, filename_prefix="xl/base").run(ctx)
    saved = base_dir / "output" / "xl" / "base_00001_.safetensors"
    with safe_open(str(saved), "pt") as f:
        metadata = f.metadata()
    assert metadata == {
        "modelspec.architecture": "stable-diffusion-xl-v1-base",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.implementation": "sgm",
        "modelspec.title": "base 1",
        "modelspec.predict_key": "epsilon",
        "prompt": json.dumps({}),
    }
    written = load_file(str(saved))
    original = load_file(str(tiny_files["base"]))
    assert set(written) == set(original) | {L_POSITIONS}
    assert torch.equal(written[L_POSITIONS], torch.arange(77)[None])
    unpatched = [
        k for k in original if "to_k" not in k and "k_proj" not in k and "in_proj" not in k
    ]
    assert all(torch.equal(written[k], original[k]) for k in unpatched if "fc1" not in k)

    again = CheckpointLoaderSimple(ckpt_name=_into_models(base_dir, saved, "checkpoints")).run(ctx)
    assert_same(loaded(runtime, again.model), loaded(runtime, model))
    assert_same(loaded(runtime, again.clip.handle), loaded(runtime, clip.handle))
    assert_same(loaded(runtime, again.vae.handle), loaded(runtime, parts.vae.handle))
    before = loaded(runtime, parts.clip.handle)
    after = loaded(runtime, again.clip.handle)
    assert not torch.equal(before[G_KEY], after[G_KEY])


def test_openclip_layout_matches_diffusers_single_file_converter(base_dir, ctx, runtime):
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    parts = CheckpointLoaderSimple(ckpt_name="sdxl.safetensors").run(ctx)
    _, clip = _patched(parts)
    state = clip.checkpoint_state()
    module = clip.handle.module.clip_g
    converted = convert_open_clip_checkpoint(module, state, "conditioner.embedders.1.model.")
    expected = {
        k[len("clip_g.") :]: v
        for k, v in loaded(runtime, clip.handle).items()
        if k.startswith("clip_g.") and not k.endswith("position_ids")
    }
    assert_same({k: v for k, v in converted.items() if k in expected}, expected)


def test_refiner_saves_clip_g_alone_under_embedders_0(base_dir, ctx, runtime, tiny_files):
    parts = CheckpointLoaderSimple(ckpt_name="sdxl-refiner.safetensors").run(ctx)
    model, clip = _patched(parts)
    CheckpointSave(model=model, clip=clip, vae=parts.vae).run(ctx)
    saved = base_dir / "output" / "checkpoints" / "ComfyUI_00001_.safetensors"
    with safe_open(str(saved), "pt") as f:
        metadata = f.metadata()
    assert metadata["modelspec.architecture"] == "stable-diffusion-xl-v1-refiner"
    assert metadata["modelspec.title"] == "ComfyUI 1"
    assert set(load_file(str(saved))) == set(load_file(str(tiny_files["refiner"])))
    again = CheckpointLoaderSimple(ckpt_name=_into_models(base_dir, saved, "checkpoints")).run(ctx)
    assert again.model.refiner and again.clip.is_refiner
    assert_same(loaded(runtime, again.model), loaded(runtime, model))
    assert_same(loaded(runtime, again.clip.handle), loaded(runtime, clip.handle))


def test_model_and_vae_save_write_their_parts(base_dir, ctx, runtime, tiny_files):
    parts = CheckpointLoaderSimple(ckpt_name="sdxl.safetensors").run(ctx)
    ModelSave(model=parts.model).run(ctx)
    VAESave(vae=parts.vae).run(ctx)
    original = load_file(str(tiny_files["base"]))
    unet = load_file(str(base_dir / "output" / "diffusion_models" / "ComfyUI_00001_.safetensors"))
    assert unet.keys() == {k for k in original if k.startswith("model.diffusion_model.")}
    assert all(torch.equal(unet[k], original[k]) for k in unet)
    vae = load_file(str(base_dir / "output" / "vae" / "ComfyUI_vae_00001_.safetensors"))
    assert vae.keys() == {k[18:] for k in original if k.startswith("first_stage_model.")}


def test_clip_save_writes_clip_l_and_clip_g_files_that_dual_clip_loader_reads(
    base_dir, ctx, runtime
):
    parts = CheckpointLoaderSimple(ckpt_name="sdxl.safetensors").run(ctx)
    _, clip = _patched(parts)
    CLIPSave(clip=clip).run(ctx)
    folder = base_dir / "output" / "clip"
    assert sorted(p.name for p in folder.iterdir()) == [
        "ComfyUI_clip_g_00001_.safetensors",
        "ComfyUI_clip_l_00001_.safetensors",
    ]
    g = load_file(str(folder / "ComfyUI_clip_g_00001_.safetensors"))
    assert "text_projection.weight" in g and all(
        k.startswith("text_model.") for k in g if k != "text_projection.weight"
    )
    names = [_into_models(base_dir, p, "text_encoders") for p in sorted(folder.iterdir())]
    again = DualCLIPLoader(clip_name1=names[1], clip_name2=names[0], type="sdxl").run(ctx)
    assert_same(loaded(runtime, again.handle), loaded(runtime, clip.handle))


def test_a_prefix_outside_the_output_folder_is_refused(base_dir, ctx):
    parts = CheckpointLoaderSimple(ckpt_name="sdxl.safetensors").run(ctx)
    with pytest.raises(LoomError, match="outside the output folder"):
        CheckpointSave(
            model=parts.model, clip=parts.clip, vae=parts.vae, filename_prefix="../../escape"
        ).run(ctx)
    assert not list(base_dir.parent.glob("escape*"))


def test_lora_save_of_an_sdxl_difference_loads_back_through_lora_loader(base_dir, ctx, runtime):
    from loom_lora.extract import LoraSave
    from loom_lora.nodes import LoraLoader

    from loom.nodes.builtin.model_merging import CLIPMergeSubtract, ModelMergeSubtract

    parts = CheckpointLoaderSimple(ckpt_name="sdxl.safetensors").run(ctx)
    model, clip = parts.model.clone(), parts.clip.clone()
    unet_key = next(k for k in model.module.state_dict() if k.endswith("attn2.to_k.weight"))
    projection = "clip_g.text_projection.weight"
    state = {**model.module.state_dict(), **clip.handle.module.state_dict()}
    diffs = {key: torch.randn(state[key].shape) * 0.01 for key in (unet_key, G_KEY, projection)}
    model.add_patches({unet_key: DiffPatch(diffs[unet_key])}, 1.0)
    clip.handle.add_patches({k: DiffPatch(diffs[k]) for k in (G_KEY, projection)}, 1.0)
    model_diff = ModelMergeSubtract(model1=model, model2=parts.model, multiplier=1.0).run(ctx)
    clip_diff = CLIPMergeSubtract(clip1=clip, clip2=parts.clip, multiplier=1.0).run(ctx)
    LoraSave(lora_type="full_diff", model_diff=model_diff, text_encoder_diff=clip_diff, rank=8).run(
        ctx
    )
    saved = base_dir / "output" / "loras" / "ComfyUI_extracted_lora_00001_.safetensors"
    lora = load_file(str(saved))
    assert "text_encoders.clip_g.transformer.text_projection.diff" in lora
    assert "text_encoders.clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.diff" in lora
    (base_dir / "models" / "loras").mkdir(parents=True, exist_ok=True)
    shutil.copy(saved, base_dir / "models" / "loras" / saved.name)
    out = LoraLoader(
        model=parts.model,
        clip=parts.clip,
        lora_name=saved.name,
        strength_model=1.0,
        strength_clip=1.0,
    ).run(ctx)
    patched = {**loaded(runtime, out.model), **loaded(runtime, out.clip.handle)}
    for key, diff in diffs.items():
        torch.testing.assert_close(patched[key] - state[key], diff, rtol=0, atol=1e-4)
