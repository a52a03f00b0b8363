"""BatchImagesNode / BatchMasksNode / BatchLatentsNode (Autogrow) and ResizeImageMaskNode
(DynamicCombo): /object_info as ComfyUI 0.8 renders it, behaviour against ComfyUI's
formulas, prompts through the executor, and validation errors of grown slots."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from loom_builtin_harness import make_ctx, object_info_of, run_one

from loom.errors import PromptValidationError
from loom.executor.executor import Executor
from loom.plugins import PluginHost
from loom.runtime import Runtime
from loom.settings import Settings
from loom.workflow.convert import convert_workflow

CROP = [
    "COMBO",
    {
        "tooltip": "How to handle aspect ratio mismatch: 'disabled' stretches to fit, 'center' "
        "crops to maintain aspect ratio.",
        "default": "center",
        "multiselect": False,
        "options": ["disabled", "center"],
    },
]


def _int(default: int, minimum: int, tooltip: str) -> list:
    return [
        "INT",
        {"tooltip": tooltip, "default": default, "min": minimum, "max": 16384, "step": 1},
    ]


def _float(default: float, maximum: float, tooltip: str) -> list:
    return [
        "FLOAT",
        {"tooltip": tooltip, "default": default, "min": 0.01, "max": maximum, "step": 0.01},
    ]


# What ComfyUI 0.8's Schema.get_v1_info renders for ResizeImageMaskNode's resize_type: eight
# types, "scale by multiplier" first (bench/comfyui_0_8_io/image.json says why).
RESIZE_TYPE = [
    "COMFY_DYNAMICCOMBO_V3",
    {
        "tooltip": "Select how to resize: by exact dimensions, scale factor, matching another "
        "image, etc.",
        "options": [
            {
                "key": "scale by multiplier",
                "inputs": {"required": {"multiplier": _float(1.0, 8.0, "Scale factor (e.g., 2.0 doubles size, 0.5 halves size).")}},
            },
            {
                "key": "scale dimensions",
                "inputs": {
                    "required": {
                        "width": _int(512, 0, "Target width in pixels. Set to 0 to auto-calculate from height while preserving aspect ratio."),
                        "height": _int(512, 0, "Target height in pixels. Set to 0 to auto-calculate from width while preserving aspect ratio."),
                        "crop": CROP,
                    }
                },
            },
            {
                "key": "scale longer dimension",
                "inputs": {"required": {"longer_size": _int(512, 0, "The longer edge will be resized to this value. Aspect ratio is preserved.")}},
            },
            {
                "key": "scale shorter dimension",
                "inputs": {"required": {"shorter_size": _int(512, 0, "The shorter edge will be resized to this value. Aspect ratio is preserved.")}},
            },
            {
                "key": "scale width",
                "inputs": {"required": {"width": _int(512, 0, "Target width in pixels. Height auto-adjusts to preserve aspect ratio.")}},
            },
            {
                "key": "scale height",
                "inputs": {"required": {"height": _int(512, 0, "Target height in pixels. Width auto-adjusts to preserve aspect ratio.")}},
            },
            {
                "key": "scale total pixels",
                "inputs": {"required": {"megapixels": _float(1.0, 16.0, "Target total megapixels (e.g., 1.0 ≈ 1024×1024). Aspect ratio is preserved.")}},
            },
            {
                "key": "match size",
                "inputs": {
                    "required": {
                        "match": ["IMAGE,MASK", {"tooltip": "Resize input to match the dimensions of this reference image or mask."}],
                        "crop": CROP,
                    }
                },
            },
        ],
    },
]  # fmt: skip


@pytest.mark.parametrize(
    ("class_type", "field", "slot", "wire", "category", "display"),
    [
        ("BatchImagesNode", "images", "image", "IMAGE", "image", "Batch Images"),
        ("BatchMasksNode", "masks", "mask", "MASK", "mask", "Batch Masks"),
        ("BatchLatentsNode", "latents", "latent", "LATENT", "latent", "Batch Latents"),
    ],
)
def test_batch_nodes_object_info_is_comfyuis(class_type, field, slot, wire, category, display):
    assert object_info_of(class_type) == {
        "input": {
            "required": {
                field: [
                    "COMFY_AUTOGROW_V3",
                    {
                        "template": {
                            "input": {"required": {slot: [wire, {}]}},
                            "prefix": slot,
                            "min": 2,
                            "max": 50,
                        }
                    },
                ]
            }
        },
        "input_order": {"required": [field]},
        "output": [wire],
        "output_is_list": [False],
        "output_name": [wire],
        "output_tooltips": [None],
        "output_matchtypes": None,
        "name": class_type,
        "display_name": display,
        "description": "",
        "python_module": "comfy_extras.nodes_post_processing",
        "category": category,
        "output_node": False,
        "deprecated": False,
        "experimental": False,
        "api_node": False,
    }


def test_resize_image_mask_object_info_is_comfyuis():
    info = object_info_of("ResizeImageMaskNode")
    template = {"template_id": "input_type", "allowed_types": "IMAGE,MASK"}
    assert info["input"] == {
        "required": {
            "input": ["COMFY_MATCHTYPE_V3", {"template": template}],
            "resize_type": RESIZE_TYPE,
            "scale_method": [
                "COMBO",
                {
                    "tooltip": "Interpolation algorithm. 'area' is best for downscaling, 'lanczos' "
                    "for upscaling, 'nearest-exact' for pixel art.",
                    "default": "area",
                    "multiselect": False,
                    "options": ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"],
                },
            ],
        }
    }
    assert info["input_order"] == {"required": ["input", "resize_type", "scale_method"]}
    assert (info["output"], info["output_name"], info["output_matchtypes"]) == (
        ["COMFY_MATCHTYPE_V3"],
        ["resized"],
        ["input_type"],
    )
    assert (info["category"], info["display_name"], info["description"]) == (
        "transform",
        "Resize Image/Mask",
        "Resize an image or mask using various scaling methods.",
    )


def _bilinear(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, H, W, C]`` resized as ComfyUI's common_upscale(..., "bilinear", ...) does."""
    return F.interpolate(image.movedim(-1, 1), size=(height, width), mode="bilinear").movedim(1, -1)


def test_batch_images_resizes_to_the_first_and_pads_alpha(tmp_path):
    torch.manual_seed(0)
    first = torch.rand(1, 4, 6, 4)
    same_aspect = torch.rand(2, 8, 12, 3)  # RGB, twice the size: alpha 1 added, then resized
    out = run_one(
        "BatchImagesNode",
        make_ctx(tmp_path),
        images={"image0": first, "image1": same_aspect},
    )
    padded = torch.cat([same_aspect, torch.ones(2, 8, 12, 1)], dim=-1)
    assert out.shape == (3, 4, 6, 4)
    torch.testing.assert_close(out[:1], first)
    torch.testing.assert_close(out[1:], _bilinear(padded, 4, 6))


def test_batch_masks_and_latents(tmp_path):
    torch.manual_seed(1)
    masks = [torch.rand(1, 4, 4), torch.rand(1, 8, 8), torch.rand(2, 4, 4)]
    out = run_one(
        "BatchMasksNode",
        make_ctx(tmp_path),
        masks={f"mask{i}": m for i, m in enumerate(masks)},
    )
    expected_second = F.interpolate(masks[1].unsqueeze(1), size=(4, 4), mode="bilinear")
    torch.testing.assert_close(out, torch.cat([masks[0], expected_second[:, 0], masks[2]]))

    first = {"samples": torch.rand(2, 4, 2, 2), "noise_mask": "kept"}
    second = {"samples": torch.rand(1, 4, 2, 2), "batch_index": [7]}
    out = run_one(
        "BatchLatentsNode", make_ctx(tmp_path), latents={"latent0": first, "latent1": second}
    )
    torch.testing.assert_close(out["samples"], torch.cat([first["samples"], second["samples"]]))
    assert out["batch_index"] == [0, 1, 7] and out["noise_mask"] == "kept"


def test_batch_latents_of_different_families_name_the_slots(tmp_path):
    latents = {
        "latent0": {"samples": torch.zeros(1, 4, 2, 2)},
        "latent1": {"samples": torch.zeros(1, 16, 2, 2)},
    }
    with pytest.raises(
        ValueError, match=r"BatchLatentsNode: latents.latent0 has 4 .* latents.latent1 has 16"
    ):
        run_one("BatchLatentsNode", make_ctx(tmp_path), latents=latents)  # fmt: skip


def _resize(tmp_path, input, method="bilinear", **choice):
    return run_one(
        "ResizeImageMaskNode",
        make_ctx(tmp_path),
        input=input,
        resize_type=choice,
        scale_method=method,
    )


@pytest.mark.parametrize(
    ("choice", "size"),
    [
        ({"resize_type": "scale dimensions", "width": 10, "height": 0, "crop": "disabled"}, (5, 10)),
        ({"resize_type": "scale by multiplier", "multiplier": 1.5}, (9, 18)),
        ({"resize_type": "scale longer dimension", "longer_size": 5}, (2, 5)),  # round(2.5) = 2
        ({"resize_type": "scale shorter dimension", "shorter_size": 3}, (3, 6)),
        ({"resize_type": "scale width", "width": 7}, (4, 7)),  # round(6 * 7 / 12) = round(3.5) = 4
        ({"resize_type": "scale height", "height": 9}, (9, 18)),
        ({"resize_type": "scale total pixels", "megapixels": 2**-12}, (11, 23)),  # 256 px
    ],
)  # fmt: skip
def test_resize_modes_follow_comfyuis_size_rules(tmp_path, choice, size):
    image = torch.rand(2, 6, 12, 3)
    out = _resize(tmp_path, image, **choice)
    assert out.shape == (2, *size, 3)
    torch.testing.assert_close(out, _bilinear(image, *size))
    mask = _resize(tmp_path, image[..., 0], **choice)  # a MASK comes back a MASK
    torch.testing.assert_close(mask, _bilinear(image[..., :1], *size)[..., 0])


def test_resize_match_size(tmp_path):
    image = torch.rand(1, 10, 20, 3)
    matched = _resize(
        tmp_path, image, resize_type="match size", match=torch.zeros(1, 5, 5), crop="center"
    )
    torch.testing.assert_close(matched, _bilinear(image[:, :, 5:15], 5, 5))  # centre square


def _runner(tmp_path) -> Executor:
    settings = Settings(base_directory=tmp_path, load_custom_nodes=False)
    return Executor(Runtime(settings, PluginHost(entry_points=False)))


def _empty(width: int, color: int) -> dict:
    return {
        "class_type": "EmptyImage",
        "inputs": {"width": width, "height": 4, "batch_size": 1, "color": color},
    }


@pytest.mark.parametrize("slots", [2, 3])
def test_batch_images_prompt_with_grown_slots(tmp_path, slots):
    prompt = {str(i + 1): _empty(4 + 4 * i, 0x010101 * (i + 1)) for i in range(slots)}
    prompt["10"] = {
        "class_type": "BatchImagesNode",
        "inputs": {f"images.image{i}": [str(i + 1), 0] for i in range(slots)},
    }
    prompt["11"] = {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}}
    result = _runner(tmp_path).run_prompt(prompt, prompt_id="p")
    assert result.status_str == "success", result.messages
    ((batch,),) = result.values["10"]
    assert batch.shape == (slots, 4, 4, 3)
    # each slot kept its colour, in slot order (the wider ones centre-cropped and resized)
    assert [round(float(batch[i, 0, 0, 0]) * 255) for i in range(slots)] == list(
        range(1, slots + 1)
    )


def _errors_of(executor: Executor, prompt: dict, node_id: str) -> list[dict]:
    with pytest.raises(PromptValidationError) as info:
        executor.validate(prompt)
    return info.value.node_errors[node_id]["errors"]


def _errors(executor: Executor, prompt: dict) -> list[dict]:
    return _errors_of(executor, prompt, "10")


def _one_slot() -> dict:
    return {
        "1": _empty(4, 0),
        "10": {"class_type": "BatchImagesNode", "inputs": {"images.image0": ["1", 0]}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}},
    }


def test_slots_below_min_are_not_required(tmp_path):
    # ComfyUI 0.8 expands only the slots a prompt gives: one image for BatchImagesNode
    # (min 2) validates and runs, a batch of one
    executor = _runner(tmp_path)
    one = _one_slot()
    result = executor.run_prompt(one, prompt_id="p")
    assert result.status_str == "success", result.messages
    ((batch,),) = result.values["10"]
    assert batch.shape == (1, 4, 4, 3)
    # none at all validates too; the node then says it was given no slot
    none = {**one, "10": {"class_type": "BatchImagesNode", "inputs": {}}}
    executor.validate(none)
    result = executor.run_prompt(none, prompt_id="q")
    error = dict(result.messages)["execution_error"]
    assert (error["node_id"], error["exception_type"]) == ("10", "ValueError")
    assert error["exception_message"] == "BatchImagesNode: input 'images' has no connected slot"


def test_grown_slot_errors_name_node_and_input(tmp_path):
    executor = _runner(tmp_path)
    wrong = {
        **_one_slot(),
        "2": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 4, "height": 4}},
        "10": {
            "class_type": "BatchImagesNode",
            "inputs": {"images.image0": ["1", 0], "images.image1": ["2", 0]},
        },
    }
    (error,) = _errors(executor, wrong)
    assert (error["type"], error["details"], error["extra_info"]["input_name"]) == (
        "return_type_mismatch",
        "images.image1, received_type(MASK) mismatch input_type(IMAGE)",
        "images.image1",
    )


def _resize_prompt(**inputs) -> dict:
    return {
        "1": _empty(8, 0xFFFFFF),
        "10": {
            "class_type": "ResizeImageMaskNode",
            "inputs": {"input": ["1", 0], "scale_method": "area", **inputs},
        },
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}},
    }


def test_dynamic_combo_errors_name_node_and_input(tmp_path):
    executor = _runner(tmp_path)
    (error,) = _errors(executor, _resize_prompt(resize_type="squash"))
    assert (error["type"], error["extra_info"]["input_name"]) == (
        "value_not_in_list",
        "resize_type",
    )
    assert error["details"] == (
        "resize_type: 'squash' not in ['scale by multiplier', 'scale dimensions', "
        "'scale longer dimension', 'scale shorter dimension', 'scale width', 'scale height', "
        "'scale total pixels', 'match size']"
    )
    # a later ComfyUI's ninth type is not 0.8's: refused before anything runs, the same way
    (error,) = _errors(executor, _resize_prompt(resize_type="scale to multiple"))
    assert (error["type"], error["extra_info"]["input_name"]) == (
        "value_not_in_list",
        "resize_type",
    )
    # ComfyUI 0.8 adds the combo only when its key is given: a prompt without it validates
    # and fails when run, the message naming the node and the input
    executor.validate(_resize_prompt())
    result = executor.run_prompt(_resize_prompt(), prompt_id="p")
    error = dict(result.messages)["execution_error"]
    assert (error["node_id"], error["node_type"]) == ("10", "ResizeImageMaskNode")
    assert error["exception_message"] == (
        "ResizeImageMaskNode: input 'resize_type' was not given (a DynamicCombo needs one of "
        "its option keys)"
    )
    (error,) = _errors(executor, _resize_prompt(resize_type="scale width"))
    assert (error["type"], error["details"]) == ("required_input_missing", "width")
    assert error["extra_info"]["input_name"] == "resize_type.width"
    (error,) = _errors(executor, _resize_prompt(**{"resize_type": "scale width", "resize_type.width": -1}))  # fmt: skip
    assert (error["type"], error["details"]) == ("value_smaller_than_min", "resize_type.width")


def test_resize_prompt_runs_with_the_chosen_options_inputs(tmp_path):
    prompt = _resize_prompt(
        **{"resize_type": "scale dimensions", "resize_type.width": "6", "resize_type.height": 2,
           "resize_type.crop": "disabled", "resize_type.multiplier": 3.0}  # another option's: ignored
    )  # fmt: skip
    result = _runner(tmp_path).run_prompt(prompt, prompt_id="p")
    assert result.status_str == "success", result.messages
    ((resized,),) = result.values["10"]
    assert resized.shape == (1, 2, 6, 3)


def _ui_node(node_id, type_, inputs=(), outputs=(), widgets=None, order=0) -> dict:
    return {
        "id": node_id,
        "type": type_,
        "pos": [0, 0],
        "size": [100, 100],
        "flags": {},
        "order": order,
        "mode": 0,
        "inputs": list(inputs),
        "outputs": list(outputs),
        "properties": {},
        "widgets_values": widgets if widgets is not None else [],
    }


@pytest.mark.parametrize("slots", [1, 2, 3])
def test_ui_workflow_with_grown_slots_and_a_dynamic_combo(tmp_path, slots):
    nodes, links = [], []
    for i in range(slots):
        out = [{"name": "IMAGE", "type": "IMAGE", "links": [i + 1]}]
        nodes.append(_ui_node(i + 1, "EmptyImage", outputs=out, widgets=[4, 4, 1, 0], order=i))
        links.append([i + 1, i + 1, 0, 20, i, "IMAGE"])
    grown = [{"name": f"images.image{i}", "type": "IMAGE", "link": i + 1} for i in range(slots)]
    grown.append({"name": f"images.image{slots}", "type": "IMAGE", "link": None})  # the empty one
    nodes.append(
        _ui_node(20, "BatchImagesNode", grown, [{"name": "IMAGE", "type": "IMAGE", "links": [50]}])
    )
    resize_inputs = [
        {"name": "input", "type": "COMFY_MATCHTYPE_V3", "link": 50},
        {"name": "resize_type", "type": "COMFY_DYNAMICCOMBO_V3", "widget": {"name": "resize_type"}, "link": None},
        {"name": "resize_type.multiplier", "type": "FLOAT", "widget": {"name": "resize_type.multiplier"}, "link": None},
        {"name": "scale_method", "type": "COMBO", "widget": {"name": "scale_method"}, "link": None},
    ]  # fmt: skip
    nodes.append(
        _ui_node(
            21,
            "ResizeImageMaskNode",
            resize_inputs,
            [{"name": "resized", "type": "COMFY_MATCHTYPE_V3", "links": [51]}],
            ["scale by multiplier", 2.0, "nearest-exact"],
        )
    )
    nodes.append(_ui_node(22, "PreviewImage", [{"name": "images", "type": "IMAGE", "link": 51}]))
    links += [[50, 20, 0, 21, 0, "IMAGE"], [51, 21, 0, 22, 0, "IMAGE"]]
    workflow = {
        "last_node_id": 22,
        "last_link_id": 51,
        "nodes": nodes,
        "links": links,
        "version": 0.4,
    }
    executor = _runner(tmp_path)
    prompt = convert_workflow(workflow, executor.registry)
    assert prompt["21"]["inputs"] == {
        "resize_type": "scale by multiplier",
        "resize_type.multiplier": 2.0,
        "scale_method": "nearest-exact",
        "input": ["20", 0],
    }
    assert set(prompt["20"]["inputs"]) == {f"images.image{i}" for i in range(slots)}
    result = executor.run_prompt(prompt, prompt_id="p")
    assert result.status_str == "success", result.messages
    ((resized,),) = result.values["21"]
    assert resized.shape == (slots, 8, 8, 3)


def test_match_size_links_a_mask_to_an_image_through_the_option_input(tmp_path):
    prompt = {
        "1": _empty(12, 0xFFFFFF),
        "2": {"class_type": "SolidMask", "inputs": {"value": 0.5, "width": 3, "height": 6}},
        "10": {
            "class_type": "ResizeImageMaskNode",
            "inputs": {
                "input": ["2", 0],
                "resize_type": "match size",
                "resize_type.match": ["1", 0],
                "resize_type.crop": "center",
                "scale_method": "nearest-exact",
            },
        },
        "11": {"class_type": "MaskPreview", "inputs": {"mask": ["10", 0]}},
    }
    result = _runner(tmp_path).run_prompt(prompt, prompt_id="p")
    assert result.status_str == "success", result.messages
    ((resized,),) = result.values["10"]
    assert resized.shape == (1, 4, 12) and float(resized.max()) == float(resized.min()) == 0.5
    prompt["3"] = {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1},
    }
    prompt["10"]["inputs"]["resize_type.match"] = ["3", 0]
    (error,) = _errors(_runner(tmp_path), prompt)
    assert (error["type"], error["extra_info"]["input_name"]) == (
        "return_type_mismatch",
        "resize_type.match",
    )
