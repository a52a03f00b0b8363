"""``DiffusersLoader`` (deprecated): a diffusers pipeline folder's components, each handed to
the family that recognises it, as the generic loaders do."""

from __future__ import annotations

import pytest
from loom_toy_family import (
    ToyClip,
    ToyFamily,
    ToyModel,
    ToyVae,
    make_runtime,
    run_node,
    write_model,
)

from loom.errors import ModelFileError
from loom.nodes.object_info import to_json
from loom.types import ModelPart


@pytest.fixture
def toy():
    return ToyFamily()


@pytest.fixture
def runtime(tmp_path, toy):
    return make_runtime(tmp_path, toy)


def _pipeline(root, *, unet="unet", encoders=2, vae=True, fp16=False):
    """A diffusers folder of toy files; returns its path."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    model_file = "diffusion_pytorch_model" + (".fp16" if fp16 else "") + ".safetensors"
    if unet:
        write_model(root / unet / model_file, parts=("model",), scale=2.0)
    for i in range(encoders):
        sub = "text_encoder" if i == 0 else "text_encoder_2"
        write_model(root / sub / "model.safetensors", parts=("clip",), scale=float(i + 1))
    if vae:
        write_model(root / "vae" / "diffusion_pytorch_model.safetensors", parts=("vae",))
    return root


def test_object_info_lists_pipeline_folders_at_any_depth(tmp_path, runtime):
    diffusers = tmp_path / "models" / "diffusers"
    _pipeline(diffusers / "sd15")
    _pipeline(diffusers / "org" / "xl")
    (diffusers / "not-a-pipeline" / "unet").mkdir(parents=True)
    info = to_json(runtime.registry.get_node("DiffusersLoader"), runtime.environment)
    assert info["input"]["required"] == {"model_path": [["org/xl", "sd15"]]}
    assert (info["category"], info["python_module"], info["output"]) == (
        "advanced/loaders/deprecated",
        "nodes",
        ["MODEL", "CLIP", "VAE"],
    )
    assert info["display_name"] == "DiffusersLoader"
    assert "output_tooltips" not in info and "deprecated" not in info


def test_each_component_goes_to_the_family_as_its_part(tmp_path, runtime, toy):
    _pipeline(tmp_path / "models" / "diffusers" / "org" / "xl", fp16=True)
    model, clip, vae = run_node(runtime, "DiffusersLoader", model_path="org/xl")
    assert isinstance(model, ToyModel) and float(model.weight[0, 0]) == 2.0
    assert isinstance(clip, ToyClip) and isinstance(vae, ToyVae)
    assert clip.source == "toy:model.safetensors" and clip.extra == ("model.safetensors",)
    loads = [(name, part) for name, part, _ in toy.loads]
    assert loads == [
        ("diffusion_pytorch_model.fp16.safetensors", ModelPart.DIFFUSION_MODEL),
        ("model.safetensors", ModelPart.TEXT_ENCODER),
        ("diffusion_pytorch_model.safetensors", ModelPart.VAE),
    ]
    [second] = toy.loads[1][2].extra_headers
    assert second.path.parent.name == "text_encoder_2"


def test_transformer_folder_and_missing_parts(tmp_path, runtime, toy, caplog):
    _pipeline(tmp_path / "models" / "diffusers" / "dit", unet="transformer", encoders=0, vae=False)
    model, clip, vae = run_node(runtime, "DiffusersLoader", model_path="dit")
    assert isinstance(model, ToyModel) and clip is None and vae is None
    assert "dit holds no VAE" in caplog.text


def test_folder_without_diffusion_model(tmp_path, runtime):
    _pipeline(tmp_path / "models" / "diffusers" / "empty", unet=None)
    with pytest.raises(ModelFileError) as info:
        run_node(runtime, "DiffusersLoader", model_path="empty")
    assert info.value.message.startswith(
        "DiffusersLoader: input 'model_path' (empty) holds no diffusion model"
    )


def test_pickled_and_sharded_weights_are_refused(tmp_path, runtime, toy):
    root = _pipeline(tmp_path / "models" / "diffusers" / "old", unet=None)
    (root / "unet").mkdir()
    (root / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelFileError) as info:
        run_node(runtime, "DiffusersLoader", model_path="old")
    assert info.value.message == (
        "DiffusersLoader: input 'model_path' (old/unet) holds only diffusion_pytorch_model.bin; "
        "Loom loads safetensors files only, never pickled weights"
    )
    (root / "unet" / "diffusion_pytorch_model.safetensors.index.json").write_text("{}")
    with pytest.raises(ModelFileError, match=r"\(old/unet\) holds weights split into shards"):
        run_node(runtime, "DiffusersLoader", model_path="old")
    assert toy.loads == []


def test_missing_or_non_pipeline_folder(tmp_path, runtime):
    with pytest.raises(ModelFileError, match="folder 'diffusers' with filename 'nope' not found"):
        run_node(runtime, "DiffusersLoader", model_path="nope")
    (tmp_path / "models" / "diffusers" / "bare").mkdir(parents=True)
    with pytest.raises(ModelFileError, match=r"'model_path' \(bare\) is not a diffusers folder"):
        run_node(runtime, "DiffusersLoader", model_path="bare")
