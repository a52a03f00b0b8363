"""The generic loader nodes dispatch to whichever model family recognises the file."""

from __future__ import annotations

import pytest
import torch
from loom_toy_family import (
    ToyClip,
    ToyFamily,
    ToyModel,
    ToyVae,
    make_ctx,
    make_registry,
    make_runtime,
    run_node,
    write_model,
)

from loom.errors import LoomError, ModelFileError, UnknownCheckpointError
from loom.nodes.object_info import to_json
from loom.types import ModelPart


@pytest.fixture
def toy():
    return ToyFamily()


@pytest.fixture
def runtime(tmp_path, toy):
    return make_runtime(tmp_path, toy)


def _models(tmp_path):
    return tmp_path / "models"


def test_combos_list_model_folders_live(tmp_path, runtime):
    info = to_json(runtime.registry.get_node("CheckpointLoaderSimple"), runtime.environment)
    assert info["input"]["required"]["ckpt_name"] == [
        [],
        {"tooltip": "The name of the checkpoint (model) to load."},
    ]
    write_model(_models(tmp_path) / "checkpoints" / "sub" / "b.safetensors")
    write_model(_models(tmp_path) / "checkpoints" / "a.safetensors")
    write_model(_models(tmp_path) / "unet" / "u.safetensors")
    write_model(_models(tmp_path) / "clip" / "c.safetensors")
    write_model(_models(tmp_path) / "vae" / "v.safetensors")
    choices = {
        ("CheckpointLoaderSimple", "ckpt_name"): ["a.safetensors", "sub/b.safetensors"],
        ("UNETLoader", "unet_name"): ["u.safetensors"],
        ("CLIPLoader", "clip_name"): ["c.safetensors"],
        ("DualCLIPLoader", "clip_name2"): ["c.safetensors"],
        ("VAELoader", "vae_name"): ["v.safetensors"],
    }
    for (node, name), expected in choices.items():
        assert (
            runtime.registry.get_node(node).input_types(runtime.environment)["required"][name][0]
            == expected
        )


def test_combos_are_empty_without_folders():
    registry = make_registry()
    for node in (
        "CheckpointLoaderSimple",
        "UNETLoader",
        "CLIPLoader",
        "DualCLIPLoader",
        "VAELoader",
    ):
        required = registry.get_node(node).input_types(None)["required"]
        assert next(iter(required.values()))[0] == []
        assert registry.get_node(node).input_types(registry)["required"] == required


def test_checkpoint_to_text_encode_to_vae_decode(tmp_path, runtime, toy):
    write_model(_models(tmp_path) / "checkpoints" / "toy.safetensors", scale=3.0)
    model, clip, vae = run_node(runtime, "CheckpointLoaderSimple", ckpt_name="toy.safetensors")
    assert isinstance(model, ToyModel) and isinstance(clip, ToyClip) and isinstance(vae, ToyVae)
    [(name, part, request)] = toy.loads
    assert (name, part, request.weight_dtype, request.clip_type) == (
        "toy.safetensors",
        ModelPart.CHECKPOINT,
        None,
        None,
    )

    (cond,) = run_node(runtime, "CLIPTextEncode", text="a red fox", clip=clip)
    assert len(cond) == 1
    tensor, options = cond[0]
    assert torch.equal(tensor, torch.full((1, 3, 4), 3.0))  # three words, weights of 3
    assert torch.equal(options["pooled_output"], torch.full((1, 4), 6.0))

    latent = {"samples": torch.ones(1, 4, 2, 3)}
    (image,) = run_node(runtime, "VAEDecode", samples=latent, vae=vae)
    assert image.shape == (1, 16, 24, 3)
    assert torch.equal(image, torch.full((1, 16, 24, 3), 3.0))
    assert vae.source == "toy:toy.safetensors"


def test_two_families_the_higher_score_loads(tmp_path):
    weak, strong = ToyFamily("weak", score=0.3), ToyFamily("strong", score=0.9)
    runtime = make_runtime(tmp_path, weak, strong)
    write_model(_models(tmp_path) / "checkpoints" / "m.safetensors")
    _, clip, _ = run_node(runtime, "CheckpointLoaderSimple", ckpt_name="m.safetensors")
    assert clip.source == "strong:m.safetensors"
    assert weak.loads == [] and len(strong.loads) == 1

    # ... and the other way round
    runtime = make_runtime(tmp_path, ToyFamily("weak", score=0.9), ToyFamily("strong", score=0.3))
    _, clip, _ = run_node(runtime, "CheckpointLoaderSimple", ckpt_name="m.safetensors")
    assert clip.source == "weak:m.safetensors"


def test_unrecognised_checkpoint(tmp_path, runtime):
    write_model(_models(tmp_path) / "checkpoints" / "alien.safetensors", prefix="alien.")
    with pytest.raises(UnknownCheckpointError) as info:
        run_node(runtime, "CheckpointLoaderSimple", ckpt_name="alien.safetensors")
    assert info.value.message == (
        "no installed plugin recognises alien.safetensors as a checkpoint; installed model families: toy"
    )


def test_unknown_file_name(tmp_path, runtime):
    with pytest.raises(ModelFileError) as info:
        run_node(runtime, "VAELoader", vae_name="missing.safetensors")
    assert (
        info.value.message == "Model in folder 'vae' with filename 'missing.safetensors' not found."
    )
    assert str(_models(tmp_path) / "vae") in info.value.hint
    with pytest.raises(ModelFileError, match="not found"):
        run_node(runtime, "CheckpointLoaderSimple", ckpt_name="../escape.safetensors")


def test_corrupt_file_reaches_the_user(tmp_path, runtime):
    path = write_model(_models(tmp_path) / "checkpoints" / "cut.safetensors")
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ModelFileError, match=r"cut\.safetensors is truncated"):
        run_node(runtime, "CheckpointLoaderSimple", ckpt_name="cut.safetensors")


def test_checkpoint_without_vae_or_text_encoder(tmp_path, runtime, caplog):
    write_model(_models(tmp_path) / "checkpoints" / "bare.safetensors", parts=("model",))
    model, clip, vae = run_node(runtime, "CheckpointLoaderSimple", ckpt_name="bare.safetensors")
    assert isinstance(model, ToyModel) and clip is None and vae is None
    assert "bare.safetensors holds no VAE" in caplog.text

    # The node using the missing part fails with ComfyUI's message and names the file.
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "bare.safetensors"}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "hi", "clip": ["4", 1]}},
    }
    with pytest.raises(LoomError) as info:
        run_node(
            runtime,
            "VAEDecode",
            make_ctx(runtime, node_id="8", prompt=prompt),
            samples={"samples": torch.zeros(1, 4, 1, 1)},
            vae=None,
        )
    assert info.value.message.startswith("ERROR: VAE is invalid: None")
    assert (
        info.value.hint == "vae comes from node 4 (CheckpointLoaderSimple) loading bare.safetensors"
    )
    with pytest.raises(LoomError) as info:
        run_node(
            runtime,
            "CLIPTextEncode",
            make_ctx(runtime, node_id="6", prompt=prompt),
            text="hi",
            clip=None,
        )
    assert "does not contain a valid clip or text encoder model" in info.value.message
    assert "bare.safetensors" in info.value.hint


def test_checkpoint_without_diffusion_model_is_an_error(tmp_path):
    runtime = make_runtime(tmp_path, ToyFamily(drop=("model",)))
    write_model(_models(tmp_path) / "checkpoints" / "x.safetensors")
    with pytest.raises(ModelFileError, match=r"x\.safetensors does not contain a diffusion model"):
        run_node(runtime, "CheckpointLoaderSimple", ckpt_name="x.safetensors")


def test_unet_loader_passes_weight_dtype(tmp_path, runtime, toy):
    write_model(_models(tmp_path) / "diffusion_models" / "u.safetensors", parts=("model",))
    (model,) = run_node(runtime, "UNETLoader", unet_name="u.safetensors", weight_dtype="fp8_e4m3fn")
    assert model.request.weight_dtype == "fp8_e4m3fn"
    assert toy.loads[-1][:2] == ("u.safetensors", ModelPart.DIFFUSION_MODEL)
    # Families get the runtime's model folders and memory manager in the request.
    assert model.request.folders is not None and model.request.folders.paths("embeddings")


def test_clip_loader_passes_type_and_device(tmp_path, runtime, toy):
    write_model(_models(tmp_path) / "text_encoders" / "te.safetensors", parts=("clip",))
    (clip,) = run_node(runtime, "CLIPLoader", clip_name="te.safetensors", type="sd3", device="cpu")
    assert isinstance(clip, ToyClip)
    name, part, request = toy.loads[-1]
    assert (name, part, request.clip_type, request.device) == (
        "te.safetensors",
        ModelPart.TEXT_ENCODER,
        "sd3",
        "cpu",
    )
    run_node(runtime, "CLIPLoader", clip_name="te.safetensors", type="stable_diffusion")
    request = toy.loads[-1][2]
    assert (request.clip_type, request.device) == ("stable_diffusion", "default")


def test_clip_loader_on_a_file_without_text_encoder(tmp_path):
    runtime = make_runtime(tmp_path, ToyFamily(drop=("clip",)))
    write_model(_models(tmp_path) / "text_encoders" / "te.safetensors", parts=("clip",))
    with pytest.raises(ModelFileError, match=r"te\.safetensors does not contain a text encoder"):
        run_node(runtime, "CLIPLoader", clip_name="te.safetensors", type="stable_diffusion")


def test_dual_clip_loader_combines_two_files(tmp_path, runtime, toy):
    write_model(_models(tmp_path) / "text_encoders" / "l.safetensors", parts=("clip",))
    write_model(_models(tmp_path) / "clip" / "g.safetensors", parts=("clip",), scale=2.0)
    (clip,) = run_node(
        runtime,
        "DualCLIPLoader",
        clip_name1="l.safetensors",
        clip_name2="g.safetensors",
        type="sdxl",
    )
    assert clip.source == "toy:l.safetensors" and clip.extra == ("g.safetensors",)
    name, part, request = toy.loads[-1]
    assert (name, part, request.clip_type, request.device) == (
        "l.safetensors",
        "text_encoder",
        "sdxl",
        "default",
    )
    assert [h.path.name for h in request.extra_headers] == ["g.safetensors"]


def test_vae_loader(tmp_path, runtime):
    write_model(_models(tmp_path) / "vae" / "v.safetensors", parts=("vae",), scale=0.5)
    (vae,) = run_node(runtime, "VAELoader", vae_name="v.safetensors")
    assert isinstance(vae, ToyVae) and float(vae.weight) == 0.5
    write_model(_models(tmp_path) / "vae" / "notvae.safetensors", parts=("clip",))
    with pytest.raises(UnknownCheckpointError, match=r"recognises notvae\.safetensors as a VAE"):
        run_node(runtime, "VAELoader", vae_name="notvae.safetensors")


def test_loader_declarations_match_comfyui(runtime):
    expected = {
        "CheckpointLoaderSimple": ("loaders", "Load Checkpoint", ["MODEL", "CLIP", "VAE"]),
        "UNETLoader": ("advanced/loaders", "Load Diffusion Model", ["MODEL"]),
        "CLIPLoader": ("advanced/loaders", "Load CLIP", ["CLIP"]),
        "DualCLIPLoader": ("advanced/loaders", "DualCLIPLoader", ["CLIP"]),
        "VAELoader": ("loaders", "Load VAE", ["VAE"]),
    }
    for class_type, (category, display, outputs) in expected.items():
        info = to_json(runtime.registry.get_node(class_type), runtime.environment)
        assert (info["category"], info["display_name"], info["output_name"]) == (
            category,
            display,
            outputs,
        )
        assert info["python_module"] == "nodes"
    unet = to_json(runtime.registry.get_node("UNETLoader"), runtime.environment)
    assert unet["input"]["required"]["weight_dtype"] == [
        ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]
    ]
    assert unet["description"] == ""
    clip = to_json(runtime.registry.get_node("CLIPLoader"), runtime.environment)
    assert clip["input_order"] == {"required": ["clip_name", "type"], "optional": ["device"]}
    assert clip["input"]["optional"]["device"] == [["default", "cpu"], {"advanced": True}]
    assert clip["input"]["required"]["type"][0][:3] == ["stable_diffusion", "stable_cascade", "sd3"]
    assert "\n hidream: llama-3.1 (Recommend) or t5\n" in clip["description"]
    dual = to_json(runtime.registry.get_node("DualCLIPLoader"), runtime.environment)
    assert dual["input_order"]["required"] == ["clip_name1", "clip_name2", "type"]
    assert dual["input"]["required"]["type"][0][:3] == ["sdxl", "sd3", "flux"]


def test_loader_without_runtime_is_a_clear_error(runtime):
    with pytest.raises(LoomError, match=r"node 1 needs a runtime \(model folders and model"):
        run_node(runtime, "VAELoader", make_ctx(None), vae_name="v.safetensors")
