"""The installed plugin: its entry point is listed and loading registers ComfyUI's nodes."""

from __future__ import annotations

from importlib.metadata import entry_points

NODES = {
    "CLIPVisionLoader",
    "CLIPVisionEncode",
    "unCLIPConditioning",
    "unCLIPCheckpointLoader",
    "StyleModelLoader",
    "StyleModelApply",
}


def test_plugin_is_installed():
    [ep] = [ep for ep in entry_points(group="loom") if ep.name == "clip_vision"]
    assert ep.value == "loom_clip_vision.plugin"


def test_loading_plugins_registers_the_nodes(loom_registry):
    registry = loom_registry("clip_vision")
    assert set(registry.by_plugin["clip_vision"]["node"]) == NODES


def test_object_info_has_comfyuis_inputs_and_outputs(loom_runtime, tmp_path):
    from loom.nodes.object_info import object_info

    runtime = loom_runtime("clip_vision")
    for folder, name in (("style_models", "flux1-redux-dev"), ("clip_vision", "sigclip")):
        (tmp_path / "models" / folder).mkdir(parents=True)
        (tmp_path / "models" / folder / f"{name}.safetensors").write_bytes(b"")
    info = object_info(runtime.registry, runtime.environment)

    def required(node):
        return info[node]["input"]["required"]

    assert required("CLIPVisionLoader") == {"clip_name": [["sigclip.safetensors"]]}
    assert required("CLIPVisionEncode")["crop"] == [["center", "none"]]
    assert required("StyleModelLoader") == {"style_model_name": [["flux1-redux-dev.safetensors"]]}
    assert required("StyleModelApply")["strength"] == [
        "FLOAT",
        {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.001},
    ]
    assert required("StyleModelApply")["strength_type"] == [["multiply", "attn_bias"]]
    assert required("unCLIPConditioning")["strength"] == [
        "FLOAT",
        {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01},
    ]
    assert info["unCLIPCheckpointLoader"]["output"] == ["MODEL", "CLIP", "VAE", "CLIP_VISION"]
    assert info["CLIPVisionEncode"]["output"] == ["CLIP_VISION_OUTPUT"]
    assert info["StyleModelApply"]["category"] == "conditioning/style_model"
    assert {info[n]["display_name"] for n in ("CLIPVisionLoader", "StyleModelApply")} == {
        "Load CLIP Vision",
        "Apply Style Model",
    }
