"""SaveAnimatedWEBP / SaveAnimatedPNG (files read back with Pillow) and LoadImageOutput."""

from __future__ import annotations

import json
import struct

import numpy as np
import torch
from loom_builtin_harness import builtin_registry, execute, make_ctx
from PIL import Image as PILImage
from PIL import ImageSequence

from loom.nodes.object_info import to_json
from loom.nodes.spec import NodeEnvironment
from loom.settings import Settings

PROMPT = {"1": {"class_type": "EmptyImage", "inputs": {}}}


def frames(count: int = 3, height: int = 4, width: int = 6) -> torch.Tensor:
    """Frame i is a flat grey of value i * 60 / 255."""
    levels = torch.arange(count, dtype=torch.float32) * 60 / 255
    return levels.reshape(count, 1, 1, 1).expand(count, height, width, 3).clone()


def png_chunks(path) -> list[tuple[bytes, bytes]]:
    data = path.read_bytes()[8:]
    chunks = []
    while data:
        (length,) = struct.unpack(">I", data[:4])
        chunks.append((data[4:8], data[8 : 8 + length]))
        data = data[12 + length :]
    return chunks


def test_save_animated_png_writes_every_frame_and_comf_chunks(tmp_path):
    ctx = make_ctx(tmp_path, prompt=PROMPT, extra_data={"extra_pnginfo": {"workflow": {"v": 1}}})
    output = execute(
        "SaveAnimatedPNG", ctx, images=frames(), filename_prefix="anim/x", fps=4.0, compress_level=9
    )
    assert output.ui == {
        "images": [{"filename": "x_00001_.png", "subfolder": "anim", "type": "output"}],
        "animated": [True],
    }
    path = tmp_path / "output" / "anim" / "x_00001_.png"
    with PILImage.open(path) as picture:
        assert picture.n_frames == 3 and picture.info["duration"] == 250
        greys = [np.array(f.convert("RGB"))[0, 0, 0] for f in ImageSequence.Iterator(picture)]
    assert greys == [0, 60, 120]
    chunks = png_chunks(path)
    comf = [data for kind, data in chunks if kind == b"comf"]
    assert comf == [b"prompt\0" + json.dumps(PROMPT).encode(), b'workflow\0{"v": 1}']
    kinds = [kind for kind, _ in chunks]
    assert kinds.index(b"comf") > max(i for i, k in enumerate(kinds) if k in (b"IDAT", b"fdAT"))


def test_save_animated_webp_lossless_frames_and_exif_prompt(tmp_path):
    ctx = make_ctx(tmp_path, prompt=PROMPT, extra_data={"extra_pnginfo": {"workflow": {"v": 1}}})
    output = execute(
        "SaveAnimatedWEBP",
        ctx,
        images=frames(),
        filename_prefix="w",
        fps=10.0,
        lossless=True,
        quality=80,
        method="fastest",
    )
    (entry,) = output.ui["images"]
    assert entry["filename"] == "w_00001_.webp" and output.ui["animated"] == [True]
    with PILImage.open(tmp_path / "output" / "w_00001_.webp") as picture:
        assert picture.n_frames == 3
        greys = [np.array(f.convert("RGB"))[0, 0, 0] for f in ImageSequence.Iterator(picture)]
        exif = picture.getexif()
    assert greys == [0, 60, 120]  # lossless
    assert exif[0x0110] == f"prompt:{json.dumps(PROMPT)}"
    assert exif[0x010F] == 'workflow:{"v": 1}'


def test_a_single_frame_is_not_flagged_animated(tmp_path):
    ctx = make_ctx(tmp_path, disable_metadata=True)
    output = execute(
        "SaveAnimatedPNG", ctx, images=frames(1), filename_prefix="one", fps=6.0, compress_level=4
    )
    assert "animated" not in output.ui
    assert not [k for k, _ in png_chunks(tmp_path / "output" / "one_00001_.png") if k == b"comf"]


def test_load_image_output_reads_an_annotated_output_file(tmp_path):
    ctx = make_ctx(tmp_path)
    (tmp_path / "output").mkdir()
    pixels = np.zeros((3, 5, 3), dtype=np.uint8)
    pixels[1, 2] = (255, 128, 0)
    PILImage.fromarray(pixels).save(tmp_path / "output" / "last.png")
    image, mask = execute("LoadImageOutput", ctx, image="last.png [output]").values
    assert image.shape == (1, 3, 5, 3) and torch.equal(
        image[0, 1, 2], torch.tensor([1.0, 128 / 255, 0.0])
    )
    assert mask.shape == (1, 64, 64)
    definition = builtin_registry().get_node("LoadImageOutput")
    env = NodeEnvironment(settings=Settings(base_directory=tmp_path))
    assert definition.impl.validate(None, {"image": "last.png [output]"}, env) is True
    message = definition.impl.validate(None, {"image": "missing.png [output]"}, env)
    assert message == "Invalid image file: missing.png [output]"


def test_object_info_matches_comfyui_schemas():
    registry = builtin_registry()
    webp = to_json(registry.get_node("SaveAnimatedWEBP"), registry)
    assert webp["input"]["required"] == {
        "images": ["IMAGE", {}],
        "filename_prefix": ["STRING", {"default": "ComfyUI", "multiline": False}],
        "fps": ["FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}],
        "lossless": ["BOOLEAN", {"default": True}],
        "quality": ["INT", {"default": 80, "min": 0, "max": 100}],
        "method": ["COMBO", {"multiselect": False, "options": ["default", "fastest", "slowest"]}],
    }
    assert webp["output_node"] is True and webp["category"] == "image/animation"
    assert webp["input"]["hidden"] == {"prompt": ["PROMPT"], "extra_pnginfo": ["EXTRA_PNGINFO"]}
    png = to_json(registry.get_node("SaveAnimatedPNG"), registry)
    assert png["input_order"]["required"] == ["images", "filename_prefix", "fps", "compress_level"]
    assert png["python_module"] == "comfy_extras.nodes_images"
    load = to_json(registry.get_node("LoadImageOutput"), registry)
    assert load["input"]["required"]["image"] == [
        "COMBO",
        {
            "image_upload": True,
            "image_folder": "output",
            "remote": {
                "route": "/internal/files/output",
                "refresh_button": True,
                "control_after_refresh": "first",
            },
        },
    ]
    assert load["experimental"] is True and load["display_name"] == "Load Image (from Outputs)"
    assert load["description"].startswith("Load an image from the output folder.")
