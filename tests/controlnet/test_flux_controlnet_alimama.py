"""``ControlNetInpaintingAliMamaApply``: ComfyUI 0.8's schema; for a mask-channel Flux
ControlNet (AliMama's inpainting layout: InstantX with a 17-channel hint latent) the masked
part of the image is blacked out and the inverted mask fills the extra channel, as ComfyUI's
formula computed by hand; through the executor on tiny files; other ControlNets get the plain
image, exactly as ``ControlNetApplyAdvanced`` with a VAE."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

pytest.importorskip("loom_flux")
pytest.importorskip("loom_samplers")

SIZE = 32


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    from loom_controlnet.tiny import write_tiny_flux_controlnet
    from loom_flux.tiny import tiny_spec, write_tiny_files

    base = tmp_path_factory.mktemp("alimama")
    write_tiny_files(base / "models", seed=0)
    folder = base / "models" / "controlnet"
    folder.mkdir(parents=True)
    dit = tiny_spec().dit
    write_tiny_flux_controlnet(folder / "alimama.safetensors", dit, mask_channel=True, seed=2)
    write_tiny_flux_controlnet(folder / "instantx.safetensors", dit, depth=1, seed=1)
    inputs = base / "input"
    inputs.mkdir()
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, size=(40, 48, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    pixels[8:30, 10:40, 3] = 0  # LoadImage's mask is 1 - alpha: the hole to inpaint
    Image.fromarray(pixels, "RGBA").save(inputs / "masked.png")
    return base


@pytest.fixture(scope="module")
def runtime(base_dir):
    from loom.runtime import Runtime
    from loom.settings import Settings

    return Runtime(Settings(base_directory=base_dir, load_custom_nodes=False, cpu_only=True))


def test_schema_is_comfyuis(runtime):
    from loom.nodes.object_info import to_json

    info = to_json(runtime.registry.nodes["ControlNetInpaintingAliMamaApply"])
    percent = {"min": 0.0, "max": 1.0, "step": 0.001}
    assert info["input"] == {
        "required": {
            "positive": ["CONDITIONING", {}],
            "negative": ["CONDITIONING", {}],
            "control_net": ["CONTROL_NET", {}],
            "vae": ["VAE", {}],
            "image": ["IMAGE", {}],
            "mask": ["MASK", {}],
            "strength": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}],
            "start_percent": ["FLOAT", {"default": 0.0, **percent}],
            "end_percent": ["FLOAT", {"default": 1.0, **percent}],
        }
    }
    assert info["output"] == ["CONDITIONING", "CONDITIONING"]
    assert info["output_name"] == ["positive", "negative"]
    assert (info["category"], info["python_module"], info["description"]) == (
        "conditioning/controlnet",
        "comfy_extras.nodes_controlnet",
        "",
    )


def test_inpainting_hint_is_comfyuis_formula():
    from loom_controlnet.flux_signal import inpainting_hint

    image = torch.rand(2, 6, 8, 3, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 3, 4)
    mask[0, 1:, 2:] = 1.0
    masked, keep = inpainting_hint(image, mask)
    # by hand: keep = 1 - mask; bilinear to the image size (an exact 2x upscale here), rounded
    expected_keep = 1.0 - mask.reshape(1, 1, 3, 4)
    on_image = F.interpolate(expected_keep, size=(6, 8), mode="bilinear").round()
    assert torch.equal(keep, expected_keep)
    assert torch.equal(masked, image * on_image.movedim(1, -1))
    assert torch.equal(masked[:, 4:, 6:], torch.zeros(2, 2, 2, 3))  # inside the hole
    assert torch.equal(masked[:, :2, :], image[:, :2, :])  # outside it


def test_signal_encodes_masked_image_and_mask_channel(base_dir):
    from loom_controlnet.loader import load_controlnet
    from loom_controlnet.nodes import ControlNetInpaintingAliMamaApply
    from loom_flux.vae import FLUX_LATENT_FORMAT

    from loom.nodes.builtin.loaders import VAELoader
    from loom.runtime import Runtime
    from loom.settings import Settings
    from loom.testing import make_context

    rt = Runtime(Settings(base_directory=base_dir, load_custom_nodes=False, cpu_only=True))
    ctx = make_context(runtime=rt)
    vae = VAELoader(vae_name="tiny-ae.safetensors").run(ctx)
    control = load_controlnet(base_dir / "models" / "controlnet" / "alimama.safetensors")
    assert control.concat_mask
    image = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 16, 16)
    mask[:, 4:12, 0:8] = 1.0
    cond = [[torch.zeros(1, 4, 8), {}]]
    outputs = ControlNetInpaintingAliMamaApply(
        positive=cond, negative=cond, control_net=control, vae=vae, image=image, mask=mask
    ).run(ctx)
    signal = outputs.positive[0][1]["control"]
    x = torch.zeros(1, 16, 2, 2)  # a 16x16 image's latent
    hint = signal._hint_for(x)
    # by hand: the image with the hole blacked out, VAE-encoded into model space, then the
    # inverted mask resized nearest-exact to the latent
    masked = image * (1.0 - mask)[..., None]
    latent = vae.encode(masked).float()
    latent = (latent - FLUX_LATENT_FORMAT.shift_factor) * FLUX_LATENT_FORMAT.scale_factor
    channel = F.interpolate((1.0 - mask)[:, None], size=(2, 2), mode="nearest-exact")
    assert hint.shape == (1, 17, 2, 2)
    assert torch.allclose(hint[:, :16], latent, atol=1e-6)
    assert torch.equal(hint[:, 16:], channel)
    assert channel.unique().tolist() == [0.0, 1.0]


def txt2img(apply: str | None, control: str = "alimama.safetensors") -> dict:
    prompt = {
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
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["2", 0]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}},
        "6": {
            "class_type": "EmptySD3LatentImage",
            "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1},
        },
        "7": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 42,
                "steps": 2,
                "cfg": 1.0,
                "sampler_name": "euler",
                "scheduler": "simple",
                "denoise": 1.0,
                "model": ["1", 0],
                "positive": ["4", 0],
                "negative": ["5", 0],
                "latent_image": ["6", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["3", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "a", "images": ["8", 0]}},
    }
    if apply is None:
        return prompt
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "masked.png"}}
    prompt["11"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": control}}
    inputs = {
        "positive": ["4", 0],
        "negative": ["5", 0],
        "control_net": ["11", 0],
        "vae": ["3", 0],
        "image": ["10", 0],
        "strength": 0.9,
        "start_percent": 0.0,
        "end_percent": 1.0,
    }
    if apply == "ControlNetInpaintingAliMamaApply":
        inputs["mask"] = ["10", 1]
    prompt["12"] = {"class_type": apply, "inputs": inputs}
    prompt["7"]["inputs"]["positive"] = ["12", 0]
    prompt["7"]["inputs"]["negative"] = ["12", 1]
    return prompt


def image(runtime, *args) -> torch.Tensor:
    from loom.executor.executor import Executor

    executor = Executor(runtime)
    validated = executor.validate(copy.deepcopy(txt2img(*args)))
    result = executor.execute("test", validated.prompt, validated.outputs, {})
    assert result.error is None, result.error.get("exception_message")
    return result.values["8"][0][0]


def test_alimama_inpainting_through_the_executor(runtime):
    base = image(runtime, None)
    inpaint = image(runtime, "ControlNetInpaintingAliMamaApply")
    ones_mask = image(runtime, "ControlNetApplyAdvanced")  # same file, mask channel of ones
    assert float((inpaint - base).abs().max()) > 1e-3
    assert float((inpaint - ones_mask).abs().max()) > 1e-4
    assert torch.equal(inpaint, image(runtime, "ControlNetInpaintingAliMamaApply"))


def test_other_controlnets_get_the_plain_image(runtime):
    plain = image(runtime, "ControlNetApplyAdvanced", "instantx.safetensors")
    alimama = image(runtime, "ControlNetInpaintingAliMamaApply", "instantx.safetensors")
    assert torch.equal(plain, alimama)


def test_mask_batch_that_fits_no_image_names_node_and_input(base_dir):
    from loom_controlnet.loader import load_controlnet
    from loom_controlnet.nodes import ControlNetInpaintingAliMamaApply

    from loom.errors import LoomError

    control = load_controlnet(base_dir / "models" / "controlnet" / "alimama.safetensors")
    cond = [[torch.zeros(1, 4, 8), {}]]
    node = ControlNetInpaintingAliMamaApply(
        positive=cond,
        negative=cond,
        control_net=control,
        vae=object(),
        image=torch.rand(2, 8, 8, 3),
        mask=torch.zeros(3, 8, 8),
    )
    with pytest.raises(LoomError) as caught:
        node.run(None)
    assert str(caught.value).startswith(
        "ControlNetInpaintingAliMamaApply: input 'mask' holds 3 masks for the 2 images of "
        "input 'image' (ControlNet alimama.safetensors)"
    )
