"""The installed plugin: entry point, registered nodes as ComfyUI describes them, spandrel
without torchvision, and a whole workflow through the executor."""

from __future__ import annotations

import importlib.util
import sys
from importlib.metadata import entry_points

import numpy as np
import torch
from PIL import Image
from upscale_reference import image_batch, write_model

from loom.nodes.object_info import object_info


def test_plugin_is_installed():
    [ep] = [ep for ep in entry_points(group="loom") if ep.name == "upscale"]
    assert ep.value == "loom_upscale.plugin"


def test_nodes_are_described_as_comfyui_describes_them(runtime, esrgan_file):
    (runtime.settings.models_dir / "upscale_models" / "RealESRGAN_x4plus.pth").write_bytes(b"")
    info = object_info(runtime.registry, runtime.environment)
    loader, upscaler = info["UpscaleModelLoader"], info["ImageUpscaleWithModel"]
    # ComfyUI 0.8 declares both with its V3 schema (comfy_extras/nodes_upscale_model.py), so
    # /object_info holds every key, the COMBO form and an options object on every input.
    # ComfyUI lists every model extension; only loading refuses what is not safetensors.
    assert loader == {
        "input": {
            "required": {
                "model_name": [
                    "COMBO",
                    {"multiselect": False, "options": ["RealESRGAN_x4plus.pth", esrgan_file]},
                ]
            }
        },
        "input_order": {"required": ["model_name"]},
        "output": ["UPSCALE_MODEL"],
        "output_is_list": [False],
        "output_name": ["UPSCALE_MODEL"],
        "output_tooltips": [None],
        "output_matchtypes": None,
        "name": "UpscaleModelLoader",
        "display_name": "Load Upscale Model",
        "description": "",
        "python_module": "comfy_extras.nodes_upscale_model",
        "category": "loaders",
        "output_node": False,
        "deprecated": False,
        "experimental": False,
        "api_node": False,
    }
    assert upscaler["input"] == {
        "required": {"upscale_model": ["UPSCALE_MODEL", {}], "image": ["IMAGE", {}]}
    }
    assert upscaler["input_order"] == {"required": ["upscale_model", "image"]}
    assert (upscaler["output"], upscaler["category"]) == (["IMAGE"], "image/upscaling")
    assert upscaler["display_name"] == "Upscale Image (using Model)"
    assert (upscaler["output_tooltips"], upscaler["deprecated"]) == ([None], False)
    for node in (loader, upscaler):
        assert node["python_module"] == "comfy_extras.nodes_upscale_model"
        assert node["description"] == "" and node["output_node"] is False


def test_spandrel_is_imported_without_leaving_a_stand_in_torchvision():
    from loom_upscale.spandrel_import import import_spandrel, normalize

    spandrel = import_spandrel()
    assert hasattr(spandrel, "ModelLoader")
    if importlib.util.find_spec("torchvision") is None:
        assert not [name for name in sys.modules if name.split(".")[0] == "torchvision"]
    x = torch.rand(1, 3, 4, 4)
    expected = (x - torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1)) / torch.tensor([0.5, 2, 4]).view(
        3, 1, 1
    )
    assert torch.allclose(normalize(x, [0.1, 0.2, 0.3], [0.5, 2, 4]), expected)


def upscale_prompt(image_name: str, model_name: str) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": model_name}},
        "3": {
            "class_type": "ImageUpscaleWithModel",
            "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]},
        },
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "up"}},
    }


def test_load_upscale_save_workflow(runtime, loom_run, esrgan_file, reference):
    pixels = (image_batch(1, 12, 20)[0].numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels, "RGB").save(runtime.settings.input_dir / "small.png")
    record = loom_run(runtime, upscale_prompt("small.png", esrgan_file))
    assert record.ok, record.error
    [saved] = record.outputs["4"]["images"]
    with Image.open(runtime.settings.output_dir / saved["subfolder"] / saved["filename"]) as png:
        assert png.size == (80, 48)
        result = torch.from_numpy(np.array(png.convert("RGB"))).float() / 255
    loaded = torch.from_numpy(pixels).float()[None] / 255
    with torch.no_grad():
        expected = reference(loaded.movedim(-1, 1)).clamp(0, 1).movedim(1, -1)[0]
    assert (result - expected).abs().max() <= 1 / 255 + 1e-6
    assert torch.allclose(record.value("3"), expected[None], atol=1e-5)


def test_unknown_architecture_in_a_workflow_names_node_input_and_file(
    runtime, loom_run, models_dir
):
    write_model(models_dir, "mystery.safetensors", {"encoder.weight": torch.zeros(2, 2)})
    Image.new("RGB", (8, 8)).save(runtime.settings.input_dir / "in.png")
    record = loom_run(runtime, upscale_prompt("in.png", "mystery.safetensors"))
    assert not record.ok
    assert record.error["node_id"] == "2" and record.error["node_type"] == "UpscaleModelLoader"
    message = record.error["exception_message"]
    assert "input 'model_name', file 'mystery.safetensors'" in message
    assert "not an upscale model" in message and "Traceback" not in message
