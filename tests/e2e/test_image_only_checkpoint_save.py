"""ImageOnlyCheckpointSave through the executor with tiny files: a Flux DiT, a CLIP vision
tower and the Flux VAE in one checkpoint, the tower keyed as its own ``clip_vision`` file
(ComfyUI writes it unprefixed for these families); CheckpointLoaderSimple and
CLIPVisionLoader read back exactly the weights that went in."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

flux_tiny = pytest.importorskip("loom_flux.tiny")
cv_tiny = pytest.importorskip("loom_clip_vision.tiny")

from loom.errors import LoomError  # noqa: E402
from loom.testing import make_context, run_prompt  # noqa: E402


@pytest.fixture
def runtime(tmp_path, loom_runtime):
    models = tmp_path / "models"
    flux_tiny.write_tiny_files(models, seed=0)
    config = cv_tiny.tiny_clip_config()
    cv_tiny.save(cv_tiny.vision_state(config, seed=4), models / "clip_vision" / "cv.safetensors")
    (tmp_path / "input").mkdir()
    return loom_runtime("flux", "clip-vision", "sd15")


PROMPT = {
    "1": {
        "class_type": "UNETLoader",
        "inputs": {"unet_name": "tiny-flux.safetensors", "weight_dtype": "default"},
    },
    "2": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "cv.safetensors"}},
    "3": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny-ae.safetensors"}},
    "4": {
        "class_type": "ImageOnlyCheckpointSave",
        "inputs": {
            "model": ["1", 0],
            "clip_vision": ["2", 0],
            "vae": ["3", 0],
            "filename_prefix": "checkpoints/img",
        },
    },
}


def loaded(runtime, handle) -> dict[str, torch.Tensor]:
    runtime.memory.load([handle])
    state = {k: v.detach().clone() for k, v in handle.module.state_dict().items()}
    runtime.memory.unload(handle)
    return state


def test_model_clip_vision_and_vae_in_one_file_that_loads_back(runtime, tmp_path):
    from loom_clip_vision.nodes import CLIPVisionLoader

    from loom.nodes.builtin.loaders import CheckpointLoaderSimple, UNETLoader, VAELoader

    record = run_prompt(runtime, PROMPT)
    assert record.ok, record.error
    saved = tmp_path / "output" / "checkpoints" / "img_00001_.safetensors"
    tensors = load_file(str(saved))
    models = tmp_path / "models"
    vision = load_file(str(models / "clip_vision" / "cv.safetensors"))
    dit = load_file(str(models / "diffusion_models" / "tiny-flux.safetensors"))
    ae = load_file(str(models / "vae" / "tiny-ae.safetensors"))
    assert set(tensors) == (
        {f"model.diffusion_model.{k}" for k in dit} | set(vision) | {f"vae.{k}" for k in ae}
    )
    assert all(torch.equal(tensors[k], v) for k, v in vision.items())

    (models / "checkpoints").mkdir()
    shutil.copy(saved, models / "checkpoints" / saved.name)
    shutil.copy(saved, models / "clip_vision" / saved.name)
    ctx = make_context(runtime)
    parts = CheckpointLoaderSimple(ckpt_name=saved.name).run(ctx)
    model = UNETLoader(unet_name="tiny-flux.safetensors", weight_dtype="default").run(ctx)
    vae = VAELoader(vae_name="tiny-ae.safetensors").run(ctx)
    got, want = loaded(runtime, parts.model), loaded(runtime, model)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    got, want = loaded(runtime, parts.vae.handle), loaded(runtime, vae.handle)
    assert all(torch.equal(got[k], want[k]) for k in want)
    tower = CLIPVisionLoader(clip_name=saved.name).run(ctx)
    first = CLIPVisionLoader(clip_name="cv.safetensors").run(ctx)
    got, want = loaded(runtime, tower.handle), loaded(runtime, first.handle)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_object_info_and_a_value_without_weights(runtime):
    from loom.nodes.builtin.model_save import ImageOnlyCheckpointSave
    from loom.nodes.object_info import object_info

    entry = object_info(runtime.registry, runtime.environment)["ImageOnlyCheckpointSave"]
    assert entry["category"] == "advanced/model_merging" and entry["output_node"] is True
    assert list(entry["input"]["required"]) == ["model", "clip_vision", "vae", "filename_prefix"]
    assert entry["input"]["required"]["clip_vision"][0] == "CLIP_VISION"
    assert entry["input"]["required"]["filename_prefix"][1]["default"] == "checkpoints/ComfyUI"
    model = make_context(runtime)
    with pytest.raises(LoomError, match="ImageOnlyCheckpointSave: input 'model'"):
        ImageOnlyCheckpointSave(model=object(), clip_vision=None, vae=None).run(model)
