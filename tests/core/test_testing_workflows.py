"""``loom.testing.txt2img_prompt``: ComfyUI's default txt2img graph for workflow tests."""

from __future__ import annotations

import pytest

from loom.testing import Txt2ImgIds, txt2img_prompt


def links(prompt: dict) -> list[tuple[str, str, list]]:
    return [
        (node_id, name, value)
        for node_id, node in prompt.items()
        for name, value in node["inputs"].items()
        if isinstance(value, list)
    ]


def test_the_default_graph_is_comfyuis_default_workflow():
    prompt = txt2img_prompt("model.safetensors", seed=5, steps=4, batch=2)
    assert {k: v["class_type"] for k, v in prompt.items()} == {
        "4": "CheckpointLoaderSimple",
        "5": "EmptyLatentImage",
        "6": "CLIPTextEncode",
        "7": "CLIPTextEncode",
        "3": "KSampler",
        "8": "VAEDecode",
        "9": "SaveImage",
    }
    sampler = prompt["3"]["inputs"]
    assert (sampler["seed"], sampler["steps"]) == (5, 4)
    assert prompt["5"]["inputs"]["batch_size"] == 2
    assert {(n, name): v for n, name, v in links(prompt)} == {
        ("6", "clip"): ["4", 1],
        ("7", "clip"): ["4", 1],
        ("3", "model"): ["4", 0],
        ("3", "positive"): ["6", 0],
        ("3", "negative"): ["7", 0],
        ("3", "latent_image"): ["5", 0],
        ("8", "samples"): ["3", 0],
        ("8", "vae"): ["4", 2],
        ("9", "images"): ["8", 0],
    }


def test_separate_loaders_and_other_ids_link_consistently():
    loaders = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "u", "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "c", "type": "stable_diffusion"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "v"}},
    }
    node = {"class_type": "CLIPTextEncode", "inputs": {"text": "x", "clip": ["2", 0]}}
    prompt = txt2img_prompt(
        None,
        loaders=loaders,
        model=["1", 0],
        clip=["2", 0],
        vae=["3", 0],
        positive=node,
        output="PreviewImage",
        ids=Txt2ImgIds(sampler="12", decode="13", output="14"),
    )
    assert "4" not in prompt and prompt["14"] == {
        "class_type": "PreviewImage",
        "inputs": {"images": ["13", 0]},
    }
    for _, _, (target, _) in links(prompt):
        assert target in prompt
    prompt["6"]["inputs"]["text"] = "changed"
    prompt["1"]["inputs"]["unet_name"] = "changed"
    assert node["inputs"]["text"] == "x" and loaders["1"]["inputs"]["unet_name"] == "u"


@pytest.mark.parametrize("output", ["SaveImage", "PreviewImage"])
def test_each_call_is_a_fresh_prompt(output):
    first = txt2img_prompt(output=output)
    first["3"]["inputs"]["seed"] = 1
    assert txt2img_prompt(output=output)["3"]["inputs"]["seed"] == 42
