"""LoadImage, LoadImageMask, SaveImage, PreviewImage and PreviewAny against real files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from loom_builtin_harness import builtin_registry, execute, make_ctx, run_one
from PIL import Image as PILImage

from loom.nodes.builtin.save_paths import OutputPathError, get_save_path
from loom.nodes.object_info import to_json


def pixels(batch: int = 1, height: int = 3, width: int = 4) -> torch.Tensor:
    """Values on the 8-bit grid, so a PNG round trip is exact."""
    values = torch.arange(batch * height * width * 3) % 256
    return (values.float() / 255).reshape(batch, height, width, 3)


def save(ctx, images=None, prefix="ComfyUI"):
    return execute(
        "SaveImage", ctx, images=pixels() if images is None else images, filename_prefix=prefix
    ).ui["images"]


def test_save_image_counts_up_across_calls_and_batches(tmp_path):
    ctx = make_ctx(tmp_path)
    assert save(ctx) == [{"filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output"}]
    assert [i["filename"] for i in save(ctx, pixels(batch=2))] == [
        "ComfyUI_00002_.png",
        "ComfyUI_00003_.png",
    ]
    assert [i["filename"] for i in save(ctx)] == ["ComfyUI_00004_.png"]
    assert sorted(p.name for p in (tmp_path / "output").iterdir()) == [
        f"ComfyUI_0000{n}_.png" for n in range(1, 5)
    ]


def test_save_image_continues_after_existing_files(tmp_path):
    out = tmp_path / "output"
    out.mkdir()
    for name in (
        "shot_00041_.png",
        "shot_00007_.png",
        "shot_extra.png",
        "shots_00099_.png",
        "other_00500_.png",
    ):
        (out / name).write_bytes(b"")
    assert save(make_ctx(tmp_path), prefix="shot")[0]["filename"] == "shot_00042_.png"


def test_save_image_subfolder_and_tokens(tmp_path):
    ctx = make_ctx(tmp_path)
    images = save(
        ctx, pixels(batch=2, height=3, width=4), prefix="runs/day1/img_%width%x%height%_%batch_num%"
    )
    assert images == [
        {"filename": "img_4x3_0_00001_.png", "subfolder": "runs/day1", "type": "output"},
        {"filename": "img_4x3_1_00002_.png", "subfolder": "runs/day1", "type": "output"},
    ]
    assert (tmp_path / "output/runs/day1/img_4x3_1_00002_.png").is_file()
    # A second run does not overwrite the batched names.
    again = save(ctx, pixels(), prefix="runs/day1/img_%width%x%height%_%batch_num%")
    assert again[0]["filename"] == "img_4x3_0_00003_.png"


@pytest.mark.parametrize("prefix", ["../escape", "a/../../escape", "/tmp/abs/escape"])
def test_save_image_refuses_to_leave_the_output_dir(tmp_path, prefix):
    (tmp_path / "output").mkdir()
    with pytest.raises(OutputPathError, match="outside the output folder"):
        save(make_ctx(tmp_path / "base"), prefix=prefix)
    assert not (tmp_path / "escape").exists()


def test_save_path_dotdot_that_stays_inside_is_fine(tmp_path):
    target = get_save_path("a/../b/pic", tmp_path)
    assert target.subfolder == "b" and target.folder == tmp_path / "b" and target.counter == 1


def test_png_text_chunks_hold_prompt_and_extra_pnginfo(tmp_path):
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 4}}}
    workflow = {"nodes": [{"id": 1}], "links": []}
    ctx = make_ctx(
        tmp_path, prompt=prompt, extra_data={"extra_pnginfo": {"workflow": workflow, "note": "hi"}}
    )
    name = save(ctx)[0]["filename"]
    with PILImage.open(tmp_path / "output" / name) as png:
        assert json.loads(png.text["prompt"]) == prompt
        assert json.loads(png.text["workflow"]) == workflow
        assert json.loads(png.text["note"]) == "hi"


def test_disable_metadata_writes_no_text_chunks(tmp_path):
    ctx = make_ctx(
        tmp_path,
        prompt={"1": {}},
        extra_data={"extra_pnginfo": {"workflow": {}}},
        disable_metadata=True,
    )
    with PILImage.open(tmp_path / "output" / save(ctx)[0]["filename"]) as png:
        assert png.text == {}


def test_preview_image_writes_to_temp_with_a_stable_random_prefix(tmp_path):
    ctx = make_ctx(tmp_path, node_id="preview-7")
    first = execute("PreviewImage", ctx, images=pixels()).ui["images"]
    second = execute("PreviewImage", ctx, images=pixels()).ui["images"]
    name1, name2 = first[0]["filename"], second[0]["filename"]
    assert first[0]["type"] == "temp" and first[0]["subfolder"] == ""
    assert name1.startswith("ComfyUI_temp_") and name1.endswith("_00001_.png")
    suffix = name1[len("ComfyUI_temp_") : -len("_00001_.png")]
    assert len(suffix) == 5 and suffix.isalpha() and suffix.islower()
    assert name2 == name1.replace("_00001_", "_00002_")
    assert (tmp_path / "temp" / name1).is_file()


def test_load_image_round_trips_a_saved_png(tmp_path):
    ctx = make_ctx(tmp_path)
    images = pixels(height=5, width=6)
    name = save(ctx, images)[0]["filename"]
    image, mask = execute("LoadImage", ctx, image=f"{name} [output]").values
    assert torch.equal(image, images)
    assert mask.shape == (1, 64, 64) and torch.count_nonzero(mask) == 0


def write_input(tmp_path, name, picture):
    folder = tmp_path / "input"
    folder.mkdir(exist_ok=True)
    picture.save(folder / name)
    return folder / name


def test_load_image_alpha_becomes_an_inverted_mask(tmp_path):
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = [[0, 51, 255], [255, 255, 102]]
    write_input(tmp_path, "a.png", PILImage.fromarray(rgba, "RGBA"))
    image, mask = execute("LoadImage", make_ctx(tmp_path), image="a.png").values
    assert image.shape == (1, 2, 3, 3) and torch.all(image[..., 0] == 1.0)
    expected = 1.0 - torch.tensor([[0, 51, 255], [255, 255, 102]], dtype=torch.float32) / 255
    assert torch.allclose(mask, expected[None])


def test_load_image_applies_exif_orientation(tmp_path):
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    folder = tmp_path / "input"
    folder.mkdir()
    PILImage.new("RGB", (4, 2), (10, 20, 30)).save(folder / "r.png", exif=exif)
    image, _ = execute("LoadImage", make_ctx(tmp_path), image="r.png").values
    assert image.shape == (1, 4, 2, 3)


def test_load_image_reads_every_frame(tmp_path):
    frames = [PILImage.new("RGB", (3, 2), color) for color in ((255, 0, 0), (0, 0, 255))]
    folder = tmp_path / "input"
    folder.mkdir()
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    image, mask = execute("LoadImage", make_ctx(tmp_path), image="anim.gif").values
    assert image.shape == (2, 2, 3, 3) and mask.shape[0] == 2
    assert image[0, 0, 0, 0] == 1.0 and image[1, 0, 0, 2] == 1.0


def test_load_image_mask_channels(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 51
    write_input(tmp_path, "m.png", PILImage.fromarray(rgba, "RGBA"))
    ctx = make_ctx(tmp_path)
    red = run_one("LoadImageMask", ctx, image="m.png", channel="red")
    alpha = run_one("LoadImageMask", ctx, image="m.png", channel="alpha")
    assert torch.equal(red, torch.ones(1, 2, 2))
    assert torch.allclose(alpha, torch.full((1, 2, 2), 1 - 51 / 255))


def test_load_image_combo_validation_and_fingerprint(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOM_BASE_DIRECTORY", str(tmp_path))
    path = write_input(tmp_path, "b.png", PILImage.new("RGB", (2, 2)))
    write_input(tmp_path, "a.webp", PILImage.new("RGB", (2, 2)))
    (tmp_path / "input" / "notes.txt").write_text("x")
    (tmp_path / "input" / "clipspace").mkdir()
    registry = builtin_registry()
    definition = registry.get_node("LoadImage")
    spec = definition.input_types(registry)["required"]["image"]
    assert spec == [["a.webp", "b.png"], {"image_upload": True}]
    assert definition.validate_args == frozenset({"image"})
    assert definition.impl.validate(None, {"image": "b.png"}) is True
    assert (
        definition.impl.validate(None, {"image": "missing.png"})
        == "Invalid image file: missing.png"
    )
    assert (
        definition.impl.validate(None, {"image": "../outside.png"})
        == "Invalid image file: ../outside.png"
    )
    before = definition.impl.fingerprint(None, {"image": "b.png"})
    PILImage.new("RGB", (2, 2), (255, 255, 255)).save(path)
    assert definition.impl.fingerprint(None, {"image": "b.png"}) != before
    mask_node = registry.get_node("LoadImageMask")
    assert mask_node.impl.fingerprint(None, {"image": "b.png", "channel": "red"}) != before


def test_load_image_of_a_missing_file_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError):
        execute("LoadImage", make_ctx(tmp_path), image="nope.png")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("hello", "hello"),
        (3, "3"),
        (2.5, "2.5"),
        (True, "True"),
        (None, "None"),
        ({"a": [1, 2]}, '{"a": [1, 2]}'),
    ],
)
def test_preview_any_text(tmp_path, value, text):
    assert execute("PreviewAny", make_ctx(tmp_path), source=value).ui == {"text": [text]}


def test_preview_any_falls_back_to_str(tmp_path):
    out = execute("PreviewAny", make_ctx(tmp_path), source=torch.zeros(2)).ui["text"][0]
    assert out.startswith("tensor(")


def test_object_info_save_image_matches_comfyui():
    registry = builtin_registry()
    info = to_json(registry.get_node("SaveImage"), registry)
    assert info == {
        "input": {
            "required": {
                "images": ["IMAGE", {"tooltip": "The images to save."}],
                "filename_prefix": [
                    "STRING",
                    {
                        "default": "ComfyUI",
                        "tooltip": "The prefix for the file to save. This may include formatting information "
                        "such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values "
                        "from nodes.",
                    },
                ],
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        },
        "input_order": {
            "required": ["images", "filename_prefix"],
            "hidden": ["prompt", "extra_pnginfo"],
        },
        "output": [],
        "output_is_list": [],
        "output_name": [],
        "name": "SaveImage",
        "display_name": "Save Image",
        "description": "Saves the input images to your ComfyUI output directory.",
        "python_module": "nodes",
        "category": "image",
        "output_node": True,
    }
    preview = to_json(registry.get_node("PreviewImage"), registry)
    assert preview["input"]["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    assert preview["output_node"] is True
    load = to_json(registry.get_node("LoadImage"), registry)
    assert load["output"] == ["IMAGE", "MASK"] and load["output_name"] == ["IMAGE", "MASK"]
    any_info = to_json(registry.get_node("PreviewAny"), registry)
    assert any_info["input"] == {"required": {"source": ["*"]}}
    assert (
        any_info["category"] == "utils"
        and any_info["python_module"] == "comfy_extras.nodes_preview_any"
    )


def test_load_image_refuses_a_symlink_pointing_out_of_the_input_folder(tmp_path):
    import pytest as _pytest

    from loom.nodes.builtin.image_io import annotated_path
    from loom.settings import Settings

    settings = Settings(base_directory=tmp_path)
    settings.input_dir.mkdir(parents=True)
    (tmp_path / "secret.png").write_bytes(b"x")
    (settings.input_dir / "link.png").symlink_to(tmp_path / "secret.png")
    with _pytest.raises(FileNotFoundError, match="Invalid image file"):
        annotated_path("link.png", settings)
