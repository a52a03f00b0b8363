"""The ControlNet nodes' schemas (ComfyUI 0.8's inputs, defaults, outputs), the loaders'
messages for files that are not ControlNets, and DiffControlNetLoader's difference files."""

from __future__ import annotations

import torch

from loom.errors import ModelFileError


def runtime(tmp_path):
    from loom.settings import Settings
    from loom.testing import make_runtime

    (tmp_path / "models" / "controlnet").mkdir(parents=True, exist_ok=True)
    settings = Settings(base_directory=tmp_path, load_custom_nodes=False, cpu_only=True)
    return make_runtime("controlnet", settings=settings)


def info(rt, name: str) -> dict:
    from loom.nodes.object_info import to_json

    return to_json(rt.registry.nodes[name])


def test_schemas_are_comfyuis(tmp_path):
    rt = runtime(tmp_path)
    strength = ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}]
    advanced = info(rt, "ControlNetApplyAdvanced")
    assert advanced["input"] == {
        "required": {
            "positive": ["CONDITIONING"],
            "negative": ["CONDITIONING"],
            "control_net": ["CONTROL_NET"],
            "image": ["IMAGE"],
            "strength": strength,
            "start_percent": ["FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001}],
            "end_percent": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001}],
        },
        "optional": {"vae": ["VAE"]},
    }
    assert advanced["output"] == ["CONDITIONING", "CONDITIONING"]
    assert advanced["output_name"] == ["positive", "negative"]
    assert (advanced["display_name"], advanced["category"]) == (
        "Apply ControlNet",
        "conditioning/controlnet",
    )
    old = info(rt, "ControlNetApply")
    assert list(old["input"]["required"]) == ["conditioning", "control_net", "image", "strength"]
    assert old["input"]["required"]["strength"] == strength
    assert old["deprecated"] is True and old["display_name"] == "Apply ControlNet (OLD)"
    loader = info(rt, "ControlNetLoader")
    assert loader["output"] == ["CONTROL_NET"] and loader["category"] == "loaders"
    assert list(info(rt, "DiffControlNetLoader")["input"]["required"]) == [
        "model",
        "control_net_name",
    ]
    union = info(rt, "SetUnionControlNetType")
    # ComfyUI 0.8 declares SetUnionControlNetType with its V3 schema: a COMBO-form input.
    kind, options = union["input"]["required"]["type"]
    assert (kind, options["multiselect"]) == ("COMBO", False)
    assert options["options"][:3] == ["auto", "openpose", "depth"]
    assert union["output_tooltips"] == [None]
    assert union["python_module"] == "comfy_extras.nodes_controlnet"


def make_ctx(rt):
    from loom.testing import make_context

    return make_context(runtime=rt)


def test_loader_names_node_input_and_file_for_a_non_controlnet(tmp_path):
    from loom_controlnet.nodes import ControlNetLoader

    from loom.memory import write_safetensors

    rt = runtime(tmp_path)
    write_safetensors(
        tmp_path / "models" / "controlnet" / "style.safetensors",
        {"lora_unet_a.lora_up.weight": torch.zeros(2, 2)},
    )
    try:
        ControlNetLoader(control_net_name="style.safetensors").run(make_ctx(rt))
    except ModelFileError as error:
        message = str(error)
    else:
        raise AssertionError("a LoRA file loaded as a ControlNet")
    assert message.startswith("ControlNetLoader: input 'control_net_name': style.safetensors")
    assert "is not a ControlNet" in message and "LoRA" in message


def test_diff_controlnet_adds_the_models_weights(tmp_path):
    from loom_controlnet.loader import load_controlnet
    from loom_controlnet.nodes import DiffControlNetLoader
    from loom_controlnet.tiny import controlnet_state
    from loom_sd15.tiny import tiny_spec
    from loom_sd15.unet import UNetModel

    from loom.memory import ModelHandle, write_safetensors

    rt = runtime(tmp_path)
    state = controlnet_state(tiny_spec().unet, seed=5)
    state["difference"] = torch.tensor([])
    write_safetensors(tmp_path / "models" / "controlnet" / "diff.safetensors", state)
    torch.manual_seed(0)
    unet = UNetModel(tiny_spec().unet).eval()
    model = ModelHandle(unet)
    loaded = DiffControlNetLoader(model=model, control_net_name="diff.safetensors").run(
        make_ctx(rt)
    )
    key = "input_blocks.1.0.in_layers.2.weight"
    expected = state[f"control_model.{key}"] + unet.state_dict()[key]
    assert torch.equal(loaded.module.state_dict()[key], expected)
    hint = "input_hint_block.0.weight"  # only in the ControlNet: as stored
    assert torch.equal(loaded.module.state_dict()[hint], state[f"control_model.{hint}"])
    try:
        load_controlnet(tmp_path / "models" / "controlnet" / "diff.safetensors")
    except ModelFileError as error:
        assert "DiffControlNetLoader" in str(error)
    else:
        raise AssertionError("a difference file loaded without a model")


def test_ui_workflow_widgets_convert_in_comfyuis_order(tmp_path):
    """A UI-format workflow (as ComfyUI saves it) becomes the API prompt with the widgets
    named in ComfyUI's order."""
    from loom.workflow.convert import convert_workflow

    rt = runtime(tmp_path)

    def node(id_, type_, inputs, outputs, widgets):
        return {
            "id": id_,
            "type": type_,
            "mode": 0,
            "inputs": [{"name": n, "type": t, "link": link} for n, t, link in inputs],
            "outputs": [{"name": n, "type": t, "links": links} for n, t, links in outputs],
            "widgets_values": widgets,
        }

    workflow = {
        "last_node_id": 4,
        "last_link_id": 5,
        "nodes": [
            node(
                1, "ControlNetLoader", [], [("CONTROL_NET", "CONTROL_NET", [1])], ["cn.safetensors"]
            ),
            node(
                2,
                "SetUnionControlNetType",
                [("control_net", "CONTROL_NET", 1)],
                [("CONTROL_NET", "CONTROL_NET", [2])],
                ["depth"],
            ),
            node(
                4,
                "LoadImage",
                [],
                [("IMAGE", "IMAGE", [3]), ("MASK", "MASK", [])],
                ["h.png", "image"],
            ),
            node(
                3,
                "ControlNetApplyAdvanced",
                [
                    ("positive", "CONDITIONING", None),
                    ("negative", "CONDITIONING", None),
                    ("control_net", "CONTROL_NET", 2),
                    ("image", "IMAGE", 3),
                    ("vae", "VAE", None),
                ],
                [("positive", "CONDITIONING", []), ("negative", "CONDITIONING", [])],
                [0.8, 0.1, 0.9],
            ),
        ],
        "links": [
            [1, 1, 0, 2, 0, "CONTROL_NET"],
            [2, 2, 0, 3, 2, "CONTROL_NET"],
            [3, 4, 0, 3, 3, "IMAGE"],
        ],
        "version": 0.4,
    }
    prompt = convert_workflow(workflow, rt.registry)
    assert prompt["1"]["inputs"] == {"control_net_name": "cn.safetensors"}
    assert prompt["2"]["inputs"] == {"control_net": ["1", 0], "type": "depth"}
    apply = prompt["3"]["inputs"]
    assert (apply["strength"], apply["start_percent"], apply["end_percent"]) == (0.8, 0.1, 0.9)
    assert apply["control_net"] == ["2", 0] and apply["image"] == ["4", 0]
