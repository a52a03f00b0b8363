"""``CheckpointLoader`` (deprecated): a config from models/configs plus a checkpoint, loaded as
``CheckpointLoaderSimple`` loads it (the family detected from the weights)."""

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

SD1_CONFIG = """model:
  base_learning_rate: 1.0e-04
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    linear_start: 0.00085
    linear_end: 0.0120
    scale_factor: 0.18215
"""


@pytest.fixture
def toy():
    return ToyFamily()


@pytest.fixture
def runtime(tmp_path, toy):
    return make_runtime(tmp_path, toy)


def _write(tmp_path, name: str, text: str) -> None:
    path = tmp_path / "models" / "configs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_object_info_matches_comfyui(tmp_path, runtime):
    _write(tmp_path, "v1-inference.yaml", SD1_CONFIG)
    _write(tmp_path, "notes.txt", "not a config")
    write_model(tmp_path / "models" / "checkpoints" / "a.safetensors")
    info = to_json(runtime.registry.get_node("CheckpointLoader"), runtime.environment)
    assert info["input"]["required"] == {
        "config_name": [["v1-inference.yaml"]],
        "ckpt_name": [["a.safetensors"]],
    }
    assert info["input_order"] == {"required": ["config_name", "ckpt_name"]}
    assert (info["category"], info["display_name"], info["python_module"]) == (
        "advanced/loaders",
        "Load Checkpoint With Config (DEPRECATED)",
        "nodes",
    )
    assert info["deprecated"] is True
    assert info["output"] == ["MODEL", "CLIP", "VAE"]
    assert info["description"] == ""


def test_loads_the_checkpoint_like_checkpoint_loader_simple(tmp_path, runtime, toy):
    _write(tmp_path, "v1-inference.yaml", SD1_CONFIG)
    write_model(tmp_path / "models" / "checkpoints" / "toy.safetensors", scale=3.0)
    model, clip, vae = run_node(
        runtime, "CheckpointLoader", config_name="v1-inference.yaml", ckpt_name="toy.safetensors"
    )
    assert isinstance(model, ToyModel) and isinstance(clip, ToyClip) and isinstance(vae, ToyVae)
    assert clip.source == "toy:toy.safetensors" and float(vae.weight) == 3.0
    [(name, part, _)] = toy.loads
    assert (name, part) == ("toy.safetensors", ModelPart.CHECKPOINT)


def test_missing_config_names_node_folder_and_file(tmp_path, runtime):
    write_model(tmp_path / "models" / "checkpoints" / "toy.safetensors")
    with pytest.raises(ModelFileError) as info:
        run_node(runtime, "CheckpointLoader", config_name="gone.yaml", ckpt_name="toy.safetensors")
    assert info.value.message == "Model in folder 'configs' with filename 'gone.yaml' not found."


def test_unreadable_config_is_a_clear_error(tmp_path, runtime):
    _write(tmp_path, "broken.yaml", "model: [unclosed")
    _write(tmp_path, "list.yaml", "- a\n- b\n")
    write_model(tmp_path / "models" / "checkpoints" / "toy.safetensors")
    with pytest.raises(ModelFileError) as info:
        run_node(
            runtime, "CheckpointLoader", config_name="broken.yaml", ckpt_name="toy.safetensors"
        )
    assert info.value.message.startswith(
        "CheckpointLoader: input 'config_name' (broken.yaml) is not a readable YAML file"
    )
    with pytest.raises(ModelFileError, match=r"'config_name' \(list\.yaml\) does not hold"):
        run_node(runtime, "CheckpointLoader", config_name="list.yaml", ckpt_name="toy.safetensors")


def test_v_prediction_config_is_refused_not_ignored(tmp_path, runtime, toy):
    _write(tmp_path, "v2-inference-v.yaml", SD1_CONFIG + '    parameterization: "v"\n')
    write_model(tmp_path / "models" / "checkpoints" / "toy.safetensors")
    with pytest.raises(ModelFileError) as info:
        run_node(
            runtime,
            "CheckpointLoader",
            config_name="v2-inference-v.yaml",
            ckpt_name="toy.safetensors",
        )
    assert info.value.message.startswith(
        "CheckpointLoader: input 'config_name' (v2-inference-v.yaml) asks for 'v' parameterization"
    )
    assert "ModelSamplingDiscrete" in info.value.hint
    assert toy.loads == []


def test_missing_checkpoint(tmp_path, runtime):
    _write(tmp_path, "v1-inference.yaml", SD1_CONFIG)
    with pytest.raises(
        ModelFileError, match=r"folder 'checkpoints' with filename 'x\.safetensors'"
    ):
        run_node(
            runtime, "CheckpointLoader", config_name="v1-inference.yaml", ckpt_name="x.safetensors"
        )
