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
    "PhotoMakerLoader",
    "PhotoMakerEncode",
}


def test_plugin_is_installed():
    [ep] = [ep for ep in entry_points(group="loom") if ep.name == "clip-vision"]
    assert ep.value == "loom_clip_vision.plugin"


def test_loading_plugins_registers_the_nodes(loom_registry):
    registry = loom_registry("clip-vision")
    assert set(registry.by_plugin["clip-vision"]["node"]) == NODES


def test_object_info_has_comfyuis_inputs_and_outputs(loom_runtime, tmp_path):
    from loom.nodes.object_info import object_info

    runtime = loom_runtime("clip-vision")
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


def _ui_node(node_id, kind, widgets, inputs=(), outputs=()):
    return {
        "id": node_id,
        "type": kind,
        "mode": 0,
        "inputs": [{"name": n, "type": t, "link": link} for n, t, link in inputs],
        "outputs": [{"name": n, "type": t, "links": links} for n, t, links in outputs],
        "widgets_values": widgets,
    }


def test_a_ui_format_redux_workflow_converts_with_comfyuis_widget_order(loom_runtime):
    """A ComfyUI-saved graph: widgets_values map onto the inputs in ComfyUI's order."""
    from loom.workflow import convert_workflow

    runtime = loom_runtime("clip-vision")
    cond = ("conditioning", "CONDITIONING", 1)
    workflow = {
        "nodes": [
            _ui_node(
                10,
                "CLIPVisionLoader",
                ["sigclip.safetensors"],
                (),
                [("CLIP_VISION", "CLIP_VISION", [2])],
            ),
            _ui_node(
                11,
                "LoadImage",
                ["style.png", "image"],
                (),
                [("IMAGE", "IMAGE", [3]), ("MASK", "MASK", [])],
            ),
            _ui_node(
                12,
                "CLIPVisionEncode",
                ["none"],
                [("clip_vision", "CLIP_VISION", 2), ("image", "IMAGE", 3)],
                [("CLIP_VISION_OUTPUT", "CLIP_VISION_OUTPUT", [4, 6])],
            ),
            _ui_node(
                13,
                "StyleModelLoader",
                ["flux1-redux-dev.safetensors"],
                (),
                [("STYLE_MODEL", "STYLE_MODEL", [5])],
            ),
            _ui_node(
                14,
                "StyleModelApply",
                [0.5, "attn_bias"],
                [
                    cond,
                    ("style_model", "STYLE_MODEL", 5),
                    ("clip_vision_output", "CLIP_VISION_OUTPUT", 4),
                ],
                [("CONDITIONING", "CONDITIONING", [7])],
            ),
            _ui_node(
                15,
                "unCLIPConditioning",
                [0.75, 0.25],
                [
                    ("conditioning", "CONDITIONING", 7),
                    ("clip_vision_output", "CLIP_VISION_OUTPUT", 6),
                ],
                [("CONDITIONING", "CONDITIONING", [])],
            ),
            _ui_node(
                16,
                "ConditioningZeroOut",
                [],
                [("conditioning", "CONDITIONING", None)],
                [("CONDITIONING", "CONDITIONING", [1])],
            ),
        ],
        "links": [
            [1, 16, 0, 14, 0, "CONDITIONING"],
            [2, 10, 0, 12, 0, "CLIP_VISION"],
            [3, 11, 0, 12, 1, "IMAGE"],
            [4, 12, 0, 14, 2, "CLIP_VISION_OUTPUT"],
            [5, 13, 0, 14, 1, "STYLE_MODEL"],
            [6, 12, 0, 15, 1, "CLIP_VISION_OUTPUT"],
            [7, 14, 0, 15, 0, "CONDITIONING"],
        ],
        "version": 0.4,
    }

    prompt = convert_workflow(workflow, runtime.registry)

    assert prompt["12"]["inputs"] == {"clip_vision": ["10", 0], "image": ["11", 0], "crop": "none"}
    assert prompt["14"]["inputs"] == {
        "conditioning": ["16", 0],
        "style_model": ["13", 0],
        "clip_vision_output": ["12", 0],
        "strength": 0.5,
        "strength_type": "attn_bias",
    }
    assert prompt["15"]["inputs"]["strength"] == 0.75
    assert prompt["15"]["inputs"]["noise_augmentation"] == 0.25
