"""Flux ControlNets in a Flux txt2img through the real executor (tiny Flux files, tiny
InstantX and XLabs ControlNet files, a hint from LoadImage): deterministic, changing the
image; bad combinations refused with messages naming node, input and file."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from loom.testing import Txt2ImgIds, txt2img_prompt

pytest.importorskip("loom_flux")
pytest.importorskip("loom_samplers")

SIZE = 32


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    from loom_controlnet.tiny import write_tiny_controlnet, write_tiny_flux_controlnet
    from loom_flux.tiny import tiny_spec, write_tiny_files
    from loom_sd15.tiny import tiny_spec as sd15_spec

    base = tmp_path_factory.mktemp("fluxcn")
    write_tiny_files(base / "models", seed=0)
    folder = base / "models" / "controlnet"
    folder.mkdir(parents=True)
    dit = tiny_spec().dit
    write_tiny_flux_controlnet(folder / "instantx.safetensors", dit, depth=1, seed=1)
    write_tiny_flux_controlnet(
        folder / "instantx_union.safetensors", dit, union_modes=4, mask_channel=True, seed=2
    )
    write_tiny_flux_controlnet(
        folder / "xlabs.safetensors", dit, kind="xlabs", depth=2, depth_single=0, seed=3
    )
    write_tiny_flux_controlnet(folder / "mistoline.safetensors", dit, kind="mistoline", seed=6)
    write_tiny_controlnet(folder / "sd15.safetensors", sd15_spec().unet, seed=4)
    inputs = base / "input"
    inputs.mkdir()
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)  # not the latent's size
    Image.fromarray(pixels).save(inputs / "hint.png")
    return base


@pytest.fixture(scope="module")
def runtime(base_dir):
    from loom.runtime import Runtime
    from loom.settings import Settings

    return Runtime(Settings(base_directory=base_dir, load_custom_nodes=False, cpu_only=True))


def txt2img(control: str | None = None, vae: bool = True, union_type: str | None = None) -> dict:
    loaders = {
        "1": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "tiny-flux.safetensors", "weight_dtype": "default"},
        },
        "2": {
            "class_type": "DualCLIPLoader",
            "inputs": {
                "clip_name1": "tiny-t5.safetensors",
                "clip_name2": "tiny-clip-l.safetensors",
                "type": "flux",
            },
        },
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny-ae.safetensors"}},
    }
    prompt = txt2img_prompt(
        None,
        loaders=loaders,
        model=["1", 0],
        clip=["2", 0],
        vae=["3", 0],
        ids=Txt2ImgIds(positive="4", negative="5", latent="6", sampler="7"),
        positive="a red fox",
        negative="",
        latent_class="EmptySD3LatentImage",
        width=SIZE,
        height=SIZE,
        steps=2,
        cfg=1.0,
        scheduler="simple",
        filename_prefix="f",
    )
    if control is not None:
        prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "hint.png"}}
        prompt["11"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": control}}
        net = ["11", 0]
        if union_type is not None:
            prompt["14"] = {
                "class_type": "SetUnionControlNetType",
                "inputs": {"control_net": net, "type": union_type},
            }
            net = ["14", 0]
        prompt["12"] = {
            "class_type": "ControlNetApplyAdvanced",
            "inputs": {
                "positive": ["4", 0],
                "negative": ["5", 0],
                "control_net": net,
                "image": ["10", 0],
                "strength": 0.8,
                "start_percent": 0.0,
                "end_percent": 1.0,
                **({"vae": ["3", 0]} if vae else {}),
            },
        }
        prompt["7"]["inputs"]["positive"] = ["12", 0]
        prompt["7"]["inputs"]["negative"] = ["12", 1]
    return prompt


def run(runtime, prompt: dict):
    from loom.executor.executor import Executor

    executor = Executor(runtime)
    validated = executor.validate(copy.deepcopy(prompt))
    return executor.execute("test", validated.prompt, validated.outputs, {})


def image(runtime, *args, **kwargs) -> torch.Tensor:
    result = run(runtime, txt2img(*args, **kwargs))
    assert result.error is None, result.error.get("exception_message")
    return result.values["8"][0][0]


def differ(a: torch.Tensor, b: torch.Tensor) -> bool:
    return float((a - b).abs().max()) > 1e-3


@pytest.mark.parametrize(
    "control", ["instantx.safetensors", "xlabs.safetensors", "mistoline.safetensors"]
)
def test_flux_controlnet_changes_the_image_deterministically(runtime, control):
    base = image(runtime)
    controlled = image(runtime, control)
    assert differ(base, controlled)
    assert torch.equal(controlled, image(runtime, control))  # fresh executor: same bits


def test_union_file_with_mask_channel_and_control_type(runtime):
    base = image(runtime)
    auto = image(runtime, "instantx_union.safetensors")
    depth = image(runtime, "instantx_union.safetensors", union_type="depth")
    assert differ(base, auto)
    # the type token is one more text token the tiny ControlNet attends to: a small change
    assert not torch.equal(auto, depth)
    assert torch.equal(depth, image(runtime, "instantx_union.safetensors", union_type="depth"))


def test_instantx_without_a_vae_names_node_and_input(runtime):
    result = run(runtime, txt2img("instantx.safetensors", vae=False))
    message = result.error["exception_message"]
    assert "ControlNetApplyAdvanced: input 'vae'" in message
    assert "instantx.safetensors" in message


def test_sd_controlnet_on_flux_names_node_input_and_file(runtime):
    result = run(runtime, txt2img("sd15.safetensors"))
    message = result.error["exception_message"]
    assert message.startswith("ControlNetApplyAdvanced: input 'control_net' (sd15.safetensors)")
    assert "the model's have 16" in message


def test_flux_controlnet_on_sd15_model_names_node_input_and_file(base_dir):
    from types import SimpleNamespace

    from loom_controlnet.loader import load_controlnet
    from loom_controlnet.nodes import bind

    from loom.errors import LoomError
    from loom.model_sampling import DiscreteEps

    control = load_controlnet(base_dir / "models" / "controlnet" / "xlabs.safetensors")
    signal = bind(control, torch.rand(1, 3, 64, 64), applied_by="ControlNetApply")
    sd15_cond = {"c_crossattn": torch.randn(2, 77, 768)}
    with pytest.raises(LoomError) as caught:
        signal.residuals(
            torch.randn(2, 4, 8, 8),
            torch.full((2,), 1.0),
            sd15_cond,
            SimpleNamespace(model_sampling=DiscreteEps()),
            2,
        )
    message = str(caught.value)
    assert message.startswith("ControlNetApply: input 'control_net' (xlabs.safetensors)")
    assert "Flux ControlNet" in message and "16 channels" in message


def test_two_flux_controlnets_chain_on_one_conditioning(runtime):
    prompt = txt2img("instantx.safetensors")
    prompt["15"] = {
        "class_type": "ControlNetLoader",
        "inputs": {"control_net_name": "xlabs.safetensors"},
    }
    prompt["16"] = {
        "class_type": "ControlNetApplyAdvanced",
        "inputs": {
            **prompt["12"]["inputs"],
            "positive": ["12", 0],
            "negative": ["12", 1],
            "control_net": ["15", 0],
        },
    }
    prompt["7"]["inputs"]["positive"] = ["16", 0]
    prompt["7"]["inputs"]["negative"] = ["16", 1]
    result = run(runtime, prompt)
    assert result.error is None, result.error.get("exception_message")
    both = result.values["8"][0][0]
    assert differ(both, image(runtime, "instantx.safetensors"))
    assert differ(both, image(runtime, "xlabs.safetensors"))
