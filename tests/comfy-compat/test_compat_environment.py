"""Packs in the shapes real packs use, importing ComfyUI's environment modules, loaded from
``custom_nodes/`` and run by ``loom run``: a loader with its own folder kind, progress and
server messages, a SaveImage subclass, missing names, a patching pack, safetensors-only
loading, live sampler lists."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from compat_helpers import empty_image
from PIL import Image

from loom.nodes.object_info import object_info

LOADER_PACK = """
import os
import folder_paths

folder_paths.folder_names_and_paths["wildcards"] = (
    [os.path.join(folder_paths.models_dir, "wildcards")], {".txt"}
)


class WildcardLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": (folder_paths.get_filename_list("wildcards"),)}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "load"
    CATEGORY = "wildcards"

    def load(self, name):
        path = folder_paths.get_full_path_or_raise("wildcards", name)
        with open(path, encoding="utf-8") as handle:
            return (handle.read().strip(),)


class TextToImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"forceInput": True})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "draw"

    def draw(self, text):
        import torch
        return (torch.full((1, 4, 4, 3), len(text) / 100.0),)


NODE_CLASS_MAPPINGS = {"WildcardLoader": WildcardLoader, "TextToImage": TextToImage}
"""


def test_loader_pack_registers_its_folder_kind_and_lists_files(base, write_pack, run_cli):
    (base / "models" / "wildcards" / "sub").mkdir(parents=True)
    (base / "models" / "wildcards" / "sub" / "colors.txt").write_text("red green blue\n")
    (base / "models" / "wildcards" / "ignored.bin").write_bytes(b"x")
    write_pack("loader_pack", {"__init__.py": LOADER_PACK})
    prompt = {
        "1": {"class_type": "WildcardLoader", "inputs": {"name": "sub/colors.txt"}},
        "2": {"class_type": "TextToImage", "inputs": {"text": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "w"}},
    }
    code, out, err = run_cli(prompt)
    assert code == 0, err
    saved = Path(out.split()[0])
    assert abs(Image.open(saved).getpixel((0, 0))[0] - round(255 * 0.14)) <= 1

    prompt["1"]["inputs"]["name"] = "ignored.bin"
    code, _, err = run_cli(prompt)
    assert code == 2 and "ignored.bin" in err and "not in" in err


def test_folder_paths_functions_follow_the_runtime(base, write_pack, make_runtime):
    runtime = make_runtime()
    import folder_paths

    assert folder_paths.base_path == str(base)
    assert folder_paths.models_dir == str(base / "models")
    assert folder_paths.get_output_directory() == str(base / "output")
    assert folder_paths.get_temp_directory() == str(base / "temp")
    assert folder_paths.get_directory_by_type("input") == str(base / "input")
    assert folder_paths.get_directory_by_type("nope") is None
    assert folder_paths.get_folder_paths("checkpoints")[0] == str(base / "models" / "checkpoints")
    assert folder_paths.get_folder_paths("clip") == folder_paths.get_folder_paths("text_encoders")
    extra = base / "elsewhere"
    (extra / "a").mkdir(parents=True)
    (extra / "a" / "m.safetensors").write_bytes(b"")
    folder_paths.add_model_folder_path("checkpoints", str(extra), is_default=True)
    assert folder_paths.get_filename_list("checkpoints") == ["a/m.safetensors"]
    assert folder_paths.get_full_path("checkpoints", "a/m.safetensors") == str(
        extra / "a" / "m.safetensors"
    )
    assert folder_paths.get_full_path("checkpoints", "../m.safetensors") is None
    with pytest.raises(FileNotFoundError, match=r"'checkpoints'.*'gone\.safetensors'"):
        folder_paths.get_full_path_or_raise("checkpoints", "gone.safetensors")
    assert folder_paths.get_annotated_filepath("x.png [output]") == str(base / "output" / "x.png")
    assert folder_paths.get_annotated_filepath("x.png") == str(base / "input" / "x.png")
    folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
        "sub/pic", folder_paths.get_output_directory(), 8, 8
    )
    assert (folder, filename, counter, subfolder) == (str(base / "output" / "sub"), "pic", 1, "sub")
    assert runtime.registry is not None


PROGRESS_PACK = """
import comfy.utils
import comfy.model_management
from server import PromptServer


class Steps:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "steps": ("INT", {"default": 3})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    def run(self, image, steps, unique_id):
        bar = comfy.utils.ProgressBar(steps)
        for _ in range(steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            bar.update(1)
        PromptServer.instance.send_sync("steps.done", {"node": unique_id, "steps": steps})
        return (image,)


NODE_CLASS_MAPPINGS = {"Steps": Steps}
"""


def test_progress_bar_drives_loom_progress_and_send_sync_is_headless(
    write_pack, make_runtime, caplog
):
    write_pack("progress_pack", {"__init__.py": PROGRESS_PACK})
    runtime = make_runtime()
    events = []
    prompt = {
        "1": empty_image(),
        "2": {"class_type": "Steps", "inputs": {"image": ["1", 0], "steps": 4}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    with caplog.at_level(logging.INFO, logger="loom_comfy_compat"):
        result = runtime.executor.run_prompt(prompt, on_event=events.append)
    assert result.error is None, result.error
    progress = [(e.data["value"], e.data["max"]) for e in events if e.type == "progress"]
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(e.data["node"] == "2" for e in events if e.type == "progress")
    assert "steps.done" in caplog.text and "'node': '2'" in caplog.text


def test_progress_bar_shows_in_the_cli(write_pack, run_cli):
    write_pack("progress_pack", {"__init__.py": PROGRESS_PACK})
    prompt = {
        "1": empty_image(),
        "2": {"class_type": "Steps", "inputs": {"image": ["1", 0], "steps": 2}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    code, _, err = run_cli(prompt, quiet=False)
    assert code == 0
    assert "node 2 (Steps)" in err and "2/2" in err


SAVE_PACK = """
import nodes


class SaveWithSuffix(nodes.SaveImage):
    def __init__(self):
        super().__init__()
        self.prefix_append = "_pack"

    @classmethod
    def INPUT_TYPES(cls):
        types = super().INPUT_TYPES()
        types["required"]["note"] = ("STRING", {"default": "hi"})
        return types

    def save_images(self, images, filename_prefix="ComfyUI", note="", prompt=None, extra_pnginfo=None):
        extra = dict(extra_pnginfo or {}, note=note)
        return super().save_images(1.0 - images, filename_prefix, prompt, extra)


NODE_CLASS_MAPPINGS = {"SaveWithSuffix": SaveWithSuffix}
"""


def test_savewithsuffix_subclasses_saveimage(base, write_pack, run_cli):
    write_pack("save_pack", {"__init__.py": SAVE_PACK})
    prompt = {
        "1": empty_image(color=0),
        "2": {
            "class_type": "SaveWithSuffix",
            "inputs": {"images": ["1", 0], "filename_prefix": "sub/pic", "note": "from a pack"},
        },
    }
    code, out, err = run_cli(prompt)
    assert code == 0, err
    saved = Path(out.strip())
    assert saved == base / "output" / "sub" / "pic_pack_00001_.png"
    picture = Image.open(saved)
    assert picture.getpixel((0, 0))[:3] == (255, 255, 255)
    assert json.loads(picture.text["note"]) == "from a pack"
    assert json.loads(picture.text["prompt"])["2"]["class_type"] == "SaveWithSuffix"


MISSING_PACK = """
from comfy.model_patcher import ModelPatcher
import comfy.sd
from folder_paths import some_future_function


class UsesPatcher:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    def run(self, image):
        ModelPatcher(None)
        return (image,)


NODE_CLASS_MAPPINGS = {"UsesPatcher": UsesPatcher}
"""

PATCHING_PACK = """
import comfy.model_management

comfy.model_management.get_torch_device = lambda: "patched"
NODE_CLASS_MAPPINGS = {}
"""

SAMPLER_PATCHING_PACK = """
import comfy.samplers

comfy.samplers.KSampler.SAMPLERS += ["my_sampler"]
NODE_CLASS_MAPPINGS = {}
"""


def test_missing_names_load_report_and_fail_at_use(base, write_pack, run_cli, capsys):
    from loom.cli.main import main

    write_pack("missing_pack", {"__init__.py": MISSING_PACK})
    write_pack("patching_pack", {"__init__.py": PATCHING_PACK})
    write_pack("sampler_patching_pack", {"__init__.py": SAMPLER_PATCHING_PACK})
    assert main(["--base-directory", str(base), "plugins"]) == 0
    listing = capsys.readouterr()
    lines = listing.out.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("custom_nodes.missing_pack"))
    assert lines[index + 1].strip() == (
        "loaded with missing ComfyUI names: comfy.model_patcher.ModelPatcher, "
        "folder_paths.some_future_function"
    )
    assert "custom_nodes.patching_pack" in listing.err
    assert "patches ComfyUI's comfy.model_management.get_torch_device" in listing.err
    assert "custom_nodes.sampler_patching_pack" in listing.err
    assert "patches ComfyUI's comfy.samplers.KSampler.SAMPLERS" in listing.err

    prompt = {
        "1": empty_image(),
        "2": {"class_type": "UsesPatcher", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    code, _, err = run_cli(prompt)
    assert code == 1
    assert "custom node pack 'missing_pack' uses ComfyUI's comfy.model_patcher.ModelPatcher" in err
    assert "which Loom does not provide" in err


def test_load_torch_file_reads_safetensors_and_refuses_pickle(base, make_runtime):
    make_runtime()
    import comfy.utils
    from safetensors.torch import save_file

    path = base / "weights.safetensors"
    save_file({"w": torch.arange(4.0)}, str(path), metadata={"k": "v"})
    tensors, metadata = comfy.utils.load_torch_file(str(path), return_metadata=True)
    assert torch.equal(tensors["w"], torch.arange(4.0)) and metadata == {"k": "v"}

    pickled = base / "weights.ckpt"
    torch.save({"w": torch.zeros(1)}, pickled)
    with pytest.raises(comfy.utils.PickleRefused, match=r"weights\.ckpt.*only \.safetensors"):
        comfy.utils.load_torch_file(str(pickled))


def test_sampler_lists_and_model_management_are_live(make_runtime):
    runtime = make_runtime()
    import comfy.model_management
    import comfy.samplers
    import nodes
    from comfy.comfy_types.node_typing import IO

    assert comfy.samplers.KSampler.SAMPLERS == runtime.registry.sampler_names()
    assert comfy.samplers.KSampler.SCHEDULERS == runtime.registry.scheduler_names()
    assert "euler" in comfy.samplers.KSampler.SAMPLERS
    assert comfy.samplers.SAMPLER_NAMES == runtime.registry.sampler_names()
    assert comfy.samplers.KSAMPLER_NAMES == comfy.samplers.SAMPLER_NAMES[:-3]
    assert comfy.samplers.SAMPLER_NAMES[-3:] == ["ddim", "uni_pc", "uni_pc_bh2"]
    assert comfy.model_management.get_torch_device() == runtime.memory.device.torch_device
    assert comfy.model_management.intermediate_device() == torch.device("cpu")
    device = runtime.memory.device.torch_device
    assert comfy.model_management.get_torch_device_name().startswith(str(device))
    assert comfy.model_management.vae_device() == device
    assert comfy.model_management.is_device_cpu(device) == (device.type == "cpu")
    assert comfy.model_management.get_free_memory() > 0
    assert not comfy.model_management.processing_interrupted()
    nodes.interrupt_processing()
    assert comfy.model_management.processing_interrupted()
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        comfy.model_management.throw_exception_if_processing_interrupted()
    nodes.interrupt_processing(False)
    assert nodes.MAX_RESOLUTION == 16384
    assert set(nodes.NODE_CLASS_MAPPINGS) == set(runtime.registry.nodes)
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS["SaveImage"] == "Save Image"
    # ComfyUI's type check is `received != expected`; IO.ANY never differs from a type.
    assert not (IO.ANY != "IMAGE") and IO.IMAGE != "LATENT" and not (IO.IMAGE != "IMAGE")


def test_core_node_classes_have_comfyui_call_signatures(make_runtime):
    make_runtime()
    import nodes

    (image,) = nodes.NODE_CLASS_MAPPINGS["EmptyImage"]().generate(8, 8, 1, 0)
    (inverted,) = nodes.ImageInvert().invert(image)
    assert torch.equal(inverted, torch.ones_like(image))
    assert nodes.ImageInvert.RETURN_TYPES == ("IMAGE",)
    assert nodes.ImageInvert.FUNCTION == "invert"
    assert object_info  # the module is used by the V3 tests too
