"""UI workflow -> API prompt: the verified examples of comfy-compat.md 7.6 and the rules of 7.3-7.5."""

from __future__ import annotations

import copy

import pytest
from wf_builder import (
    UIGraph,
    chain,
    empty_image,
    invert,
    preview,
    reroute,
    save,
    socket,
    to_object_links,
)

from loom.errors import PromptValidationError, WorkflowConversionError
from loom.workflow import convert_workflow, is_ui_workflow

WF1_EXPECTED = {
    "1": {
        "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0},
        "class_type": "EmptyImage",
        "_meta": {"title": "EmptyImage"},
    },
    "2": {
        "inputs": {"image": ["1", 0]},
        "class_type": "ImageInvert",
        "_meta": {"title": "Invert Image"},
    },
    "3": {
        "inputs": {"images": ["2", 0]},
        "class_type": "PreviewImage",
        "_meta": {"title": "My Preview"},
    },
    "4": {
        "inputs": {"filename_prefix": "compat_test", "images": ["2", 0]},
        "class_type": "SaveImage",
        "_meta": {"title": "Save Image"},
    },
}

DEFAULT_KSAMPLER_INPUTS = {
    "seed": 156680208700286,
    "steps": 20,
    "cfg": 8,
    "sampler_name": "euler",
    "scheduler": "normal",
    "denoise": 1,
    "model": ["4", 0],
    "positive": ["6", 0],
    "negative": ["7", 0],
    "latent_image": ["5", 0],
}


def test_is_ui_workflow(load_workflow):
    assert is_ui_workflow(load_workflow("wf1.json"))
    assert is_ui_workflow(to_object_links(load_workflow("wf1.json")))
    assert not is_ui_workflow(WF1_EXPECTED)
    assert not is_ui_workflow({"nodes": {"class_type": "X", "inputs": {}}})
    assert not is_ui_workflow([])
    assert not is_ui_workflow(None)


def test_wf1_matches_frontend_output(registry, load_workflow):
    prompt = convert_workflow(load_workflow("wf1.json"), registry)
    assert prompt == WF1_EXPECTED
    assert list(prompt["4"]["inputs"]) == ["filename_prefix", "images"]


def test_wf1_object_link_schema(registry, load_workflow):
    assert convert_workflow(to_object_links(load_workflow("wf1.json")), registry) == WF1_EXPECTED


def test_api_prompt_is_rejected(registry):
    with pytest.raises(WorkflowConversionError, match="not a UI workflow"):
        convert_workflow(WF1_EXPECTED, registry)


def test_default_workflow(registry, load_workflow):
    prompt = convert_workflow(load_workflow("default_workflow.json"), registry)
    assert prompt["3"]["inputs"] == DEFAULT_KSAMPLER_INPUTS
    assert prompt["3"]["_meta"] == {"title": "KSampler"}
    assert prompt["4"] == {
        "inputs": {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"},
        "class_type": "CheckpointLoaderSimple",
        "_meta": {"title": "Load Checkpoint"},
    }
    assert prompt["5"]["inputs"] == {"width": 512, "height": 512, "batch_size": 1}
    assert prompt["7"]["inputs"] == {"text": "text, watermark", "clip": ["4", 1]}
    assert prompt["8"]["inputs"] == {"samples": ["3", 0], "vae": ["4", 2]}
    assert prompt["9"]["inputs"] == {"filename_prefix": "ComfyUI", "images": ["8", 0]}
    assert sorted(prompt, key=int) == ["3", "4", "5", "6", "7", "8", "9"]


def test_primitive_seed_and_markdown_note(registry, load_workflow):
    prompt = convert_workflow(load_workflow("default_workflow_primitive.json"), registry)
    assert prompt["3"]["inputs"] == {**DEFAULT_KSAMPLER_INPUTS, "seed": 1234}
    assert "10" not in prompt  # PrimitiveNode
    assert "11" not in prompt  # MarkdownNote


def test_dict_widgets_values(registry):
    g = UIGraph()
    empty_image(g, 1, widgets={"height": 32, "width": 16, "color": 7, "bogus": 1})
    prompt = convert_workflow(g.to_json(), registry)
    assert prompt["1"]["inputs"] == {"width": 16, "height": 32, "batch_size": 1, "color": 7}


def test_fewer_widget_values_take_defaults(registry):
    g = UIGraph()
    empty_image(g, 1, widgets=[64])
    g.node(2, "KSampler", inputs=[], outputs=["LATENT"], widgets=[5, "fixed", 30])
    g.node(3, "SaveImage", inputs=[socket("images", "IMAGE")])  # no widgets_values at all
    prompt = convert_workflow(g.to_json(), registry)
    assert prompt["1"]["inputs"] == {"width": 64, "height": 512, "batch_size": 1, "color": 0}
    assert prompt["2"]["inputs"] == {
        "seed": 5,
        "steps": 30,
        "cfg": 8.0,
        "sampler_name": "euler",
        "scheduler": "simple",
        "denoise": 1.0,
    }
    assert prompt["3"]["inputs"] == {"filename_prefix": "ComfyUI"}


def test_widget_slot_rules(registry):
    """noise_seed gets a control slot by name; seed with the option False does not; combo
    controls take two slots; forceInput and hidden inputs take none."""
    g = UIGraph()
    g.node(
        1,
        "WidgetZoo",
        outputs=["INT"],
        widgets=[11, "increment", 12, "b", "fixed", "", "y", True, "extra!"],
    )
    prompt = convert_workflow(g.to_json(), registry)
    assert prompt["1"]["inputs"] == {
        "noise_seed": 11,
        "seed": 12,
        "mode": "b",
        "flavour": "y",
        "flag": True,
        "extra": "extra!",
    }


def test_load_image_upload_slot(registry):
    g = UIGraph()
    g.node(
        1,
        "LoadImage",
        inputs=[socket("image", "COMBO", True)],
        outputs=["IMAGE", "MASK"],
        widgets=["other.png", "image"],
    )
    preview(g, 2)
    g.link(1, 0, 2, 0, "IMAGE")
    prompt = convert_workflow(g.to_json(), registry)
    assert prompt["1"] == {
        "inputs": {"image": "other.png"},
        "class_type": "LoadImage",
        "_meta": {"title": "Load Image"},
    }


def test_widget_converted_to_input_keeps_its_slot(registry, load_workflow):
    wf = load_workflow("default_workflow.json")
    g = UIGraph()
    g.node(
        20,
        "PrimitiveInt",
        inputs=[socket("value", "INT", True)],
        outputs=["INT"],
        widgets=[33, "fixed"],
    )
    wf["nodes"].append(g.nodes[20])
    ksampler = next(node for node in wf["nodes"] if node["id"] == 3)
    steps = next(inp for inp in ksampler["inputs"] if inp["name"] == "steps")
    steps["link"] = 50
    wf["links"].append([50, 20, 0, 3, 5, "INT"])
    prompt = convert_workflow(wf, registry)
    assert prompt["3"]["inputs"] == {**DEFAULT_KSAMPLER_INPUTS, "steps": ["20", 0]}
    assert prompt["20"]["inputs"] == {"value": 33}


def test_bypass_prefers_same_slot(registry):
    g = UIGraph()
    empty_image(g, 1)
    empty_image(g, 2)
    g.node(
        3,
        "TwoImages",
        inputs=[socket("image_a", "IMAGE"), socket("image_b", "IMAGE")],
        outputs=["IMAGE", "IMAGE"],
        mode=4,
    )
    g.link(1, 0, 3, 0, "IMAGE")
    g.link(2, 0, 3, 1, "IMAGE")
    preview(g, 4)
    preview(g, 5)
    g.link(3, 1, 4, 0, "IMAGE")
    g.link(3, 0, 5, 0, "IMAGE")
    prompt = convert_workflow(g.to_json(), registry)
    assert "3" not in prompt
    assert prompt["4"]["inputs"] == {"images": ["2", 0]}
    assert prompt["5"]["inputs"] == {"images": ["1", 0]}


def test_bypass_matches_by_type(registry):
    g = UIGraph()
    g.node(
        1,
        "LoadImage",
        inputs=[socket("image", "COMBO", True)],
        outputs=["IMAGE", "MASK"],
        widgets=["example.png", "image"],
    )
    g.node(
        2,
        "MaskedImage",
        inputs=[socket("mask", "MASK"), socket("image", "IMAGE")],
        outputs=["IMAGE"],
        mode=4,
    )
    g.link(1, 1, 2, 0, "MASK")
    g.link(1, 0, 2, 1, "IMAGE")
    preview(g, 3)
    g.link(2, 0, 3, 0, "IMAGE")
    prompt = convert_workflow(g.to_json(), registry)
    assert prompt["3"]["inputs"] == {"images": ["1", 0]}


def test_bypass_without_matching_input_drops_the_input(registry):
    g = UIGraph()
    g.node(
        1,
        "LoadImage",
        inputs=[socket("image", "COMBO", True)],
        outputs=["IMAGE", "MASK"],
        widgets=["example.png", "image"],
    )
    g.node(2, "MaskedImage", inputs=[socket("mask", "MASK")], outputs=["IMAGE"], mode=4)
    g.link(1, 1, 2, 0, "MASK")
    preview(g, 3)
    g.link(2, 0, 3, 0, "IMAGE")
    prompt = convert_workflow(g.to_json(), registry)
    assert prompt["3"]["inputs"] == {}


def test_mute_drops_node_and_inputs_from_it(registry):
    g = UIGraph()
    empty_image(g, 1)
    invert(g, 2, mode=2)
    save(g, 3, "muted")
    g.link(1, 0, 2, 0, "IMAGE")
    g.link(2, 0, 3, 0, "IMAGE")
    prompt = convert_workflow(g.to_json(), registry)
    assert set(prompt) == {"1", "3"}
    assert prompt["3"]["inputs"] == {"filename_prefix": "muted"}


def test_legacy_reroute_chain_and_native_reroutes(registry):
    g = UIGraph()
    empty_image(g, 1)
    reroute(g, 2)
    reroute(g, 3)
    preview(g, 4)
    g.link(1, 0, 2, 0, "IMAGE")
    g.link(2, 0, 3, 0, "*")
    g.link(3, 0, 4, 0, "IMAGE")
    g.extra["reroutes"] = [{"id": 1, "pos": [10, 10], "linkIds": [1]}]
    wf = g.to_json(schema="object")
    wf["links"][0]["parentId"] = 1  # native reroute: purely visual
    prompt = convert_workflow(wf, registry)
    assert set(prompt) == {"1", "4"}
    assert prompt["4"]["inputs"] == {"images": ["1", 0]}


def test_title_falls_back_to_display_name_then_class_type(registry):
    g = UIGraph()
    empty_image(g, 1, title="Canvas")
    empty_image(g, 2)
    invert(g, 3)
    prompt = convert_workflow(g.to_json(), registry)
    assert [prompt[i]["_meta"]["title"] for i in "123"] == ["Canvas", "EmptyImage", "Invert Image"]


def test_list_widget_values_are_boxed(registry):
    g = UIGraph()
    g.node(1, "SaveImage", inputs=[socket("images", "IMAGE")], widgets=[["a", "b"]])
    assert convert_workflow(g.to_json(), registry)["1"]["inputs"] == {
        "filename_prefix": {"__value__": ["a", "b"]}
    }


def test_unknown_type_names_the_node(registry):
    g = UIGraph()
    empty_image(g, 1)
    g.node(7, "NoSuchNode", inputs=[socket("image", "IMAGE")])
    g.link(1, 0, 7, 0, "IMAGE")
    g.node(9, "AlsoMissing")
    with pytest.raises(PromptValidationError) as raised:
        convert_workflow(g.to_json(), registry)
    # every unknown type at once, worded as for an API prompt
    assert raised.value.error["type"] == "invalid_prompt"
    assert raised.value.error["message"] == (
        "Cannot execute because nodes NoSuchNode, AlsoMissing do not exist."
    )
    assert raised.value.error["details"] == "Node ID '#7', Node ID '#9'"


def test_unknown_type_is_fine_when_muted_or_bypassed(registry):
    g = UIGraph()
    empty_image(g, 1)
    g.node(7, "NoSuchNode", inputs=[socket("image", "IMAGE")], outputs=["IMAGE"], mode=4)
    g.node(8, "OtherMissing", mode=2)
    g.link(1, 0, 7, 0, "IMAGE")
    preview(g, 9)
    g.link(7, 0, 9, 0, "IMAGE")
    assert convert_workflow(g.to_json(), registry)["9"]["inputs"] == {"images": ["1", 0]}


def test_broken_link_id_names_node_and_input(registry):
    g = UIGraph()
    empty_image(g, 1)
    preview(g, 2)
    g.link(1, 0, 2, 0, "IMAGE")
    wf = g.to_json()
    wf["links"] = []
    with pytest.raises(
        WorkflowConversionError, match=r"node 2 \(PreviewImage\): input 'images'.*link 1"
    ):
        convert_workflow(wf, registry)


def test_missing_origin_node_names_node_and_input(registry):
    g = UIGraph()
    empty_image(g, 1)
    preview(g, 2)
    g.link(1, 0, 2, 0, "IMAGE")
    wf = g.to_json()
    wf["nodes"] = [n for n in wf["nodes"] if n["id"] != 1]
    with pytest.raises(
        WorkflowConversionError, match=r"node 2 \(PreviewImage\): input 'images'.*node 1"
    ):
        convert_workflow(wf, registry)


def test_reroute_loop_raises_instead_of_hanging(registry):
    g = UIGraph()
    reroute(g, 1)
    reroute(g, 2)
    preview(g, 3)
    g.link(1, 0, 2, 0)
    g.link(2, 0, 1, 0)
    g.link(2, 0, 3, 0)
    with pytest.raises(WorkflowConversionError, match="loop"):
        convert_workflow(g.to_json(), registry)


@pytest.mark.parametrize("mode", [0, 4])
def test_ten_thousand_deep_chain(registry, mode):
    prompt = convert_workflow(chain(10_000, mode=mode), registry)
    if mode == 0:
        assert len(prompt) == 10_002
        assert prompt["10001"]["inputs"] == {"image": ["10000", 0]}
    else:
        assert set(prompt) == {"1", "10002"}
    assert prompt["10002"]["inputs"] == {"images": ["10001" if mode == 0 else "1", 0]}


def test_ten_thousand_deep_reroute_chain(registry):
    g = UIGraph()
    empty_image(g, 1)
    previous = 1
    for node_id in range(2, 10_002):
        reroute(g, node_id)
        g.link(previous, 0, node_id, 0)
        previous = node_id
    preview(g, 20_000)
    g.link(previous, 0, 20_000, 0, "IMAGE")
    assert convert_workflow(g.to_json(), registry)["20000"]["inputs"] == {"images": ["1", 0]}


def test_input_workflow_is_not_modified(registry, load_workflow):
    wf = load_workflow("wf1_subgraph.json")
    before = copy.deepcopy(wf)
    convert_workflow(wf, registry)
    assert wf == before


def test_older_workflows_list_only_converted_widgets(registry, load_workflow):
    """Before frontend 1.16 only link sockets (and converted widgets) were in ``inputs``."""
    wf = load_workflow("default_workflow_primitive.json")
    ksampler = next(node for node in wf["nodes"] if node["id"] == 3)
    ksampler["inputs"] = [
        inp for inp in ksampler["inputs"] if "widget" not in inp or inp["name"] == "seed"
    ]
    ksampler["inputs"].reverse()  # sockets are matched by widget name, never by position
    wf["links"] = [link if link[0] != 10 else [10, 10, 0, 3, 0, "INT"] for link in wf["links"]]
    assert convert_workflow(wf, registry)["3"]["inputs"] == {
        **DEFAULT_KSAMPLER_INPUTS,
        "seed": 1234,
    }


def test_widget_socket_fed_by_muted_node_keeps_widget_value(registry):
    """Like the frontend: every widget is written, then resolved links overwrite it."""
    g = UIGraph()
    g.node(
        1,
        "PrimitiveInt",
        inputs=[socket("value", "INT", True)],
        outputs=["INT"],
        widgets=[9, "fixed"],
        mode=2,
    )
    empty_image(g, 2, widgets=[64, 32, 1, 0])
    g.link(1, 0, 2, 0, "INT")
    assert convert_workflow(g.to_json(), registry)["2"]["inputs"]["width"] == 64


def test_input_types_failure_names_the_node(registry):
    class Broken:
        RETURN_TYPES = ()
        FUNCTION = "run"
        calls = 0

        @classmethod
        def INPUT_TYPES(cls):
            cls.calls += 1
            if cls.calls > 1:  # fine at registration, broken afterwards
                raise RuntimeError("model folder vanished")
            return {"required": {}}

        def run(self):
            return ()

    registry.add_node("test", Broken, class_type="Broken")
    g = UIGraph()
    g.node(5, "Broken")
    with pytest.raises(WorkflowConversionError, match=r"node 5 \(Broken\).*model folder vanished"):
        convert_workflow(g.to_json(), registry)


def test_a_node_type_the_frontend_renames_on_load_converts_to_the_new_type():
    """Old saves spell ConditioningAverage's display-name key with a trailing space; the
    frontend renames such types when it loads the workflow, and so does the converter."""
    from loom.testing import make_registry

    graph = UIGraph()
    graph.node(1, "ConditioningAverage ", inputs=[], widgets=[0.25])
    prompt = convert_workflow(graph.to_json(), make_registry())
    assert prompt["1"]["class_type"] == "ConditioningAverage"
    assert prompt["1"]["inputs"]["conditioning_to_strength"] == 0.25


class _Declared:
    """Just enough of a NodeDef for ``layout_for``: its INPUT_TYPES."""

    def __init__(self, input_types):
        self._input_types = input_types

    def input_types(self, env=None):
        return self._input_types


def test_upload_button_follows_the_last_required_input(registry):
    # Frontend 1.35.9 adds the upload input at the end of ``required`` (LoadImageMask
    # saves [image, channel, upload]), so optional widgets come after the button.
    from loom.workflow.widgets import layout_for

    declared = _Declared(
        {
            "required": {
                "image": (["a.png", "b.png"], {"image_upload": True}),
                "channel": (["alpha", "red"],),
            },
            "optional": {"strength": ("FLOAT", {"default": 1.0})},
        }
    )
    layout = layout_for(declared, registry)
    assert layout.values(["b.png", "red", "image", 0.5]) == {
        "image": "b.png",
        "channel": "red",
        "strength": 0.5,
    }
