"""ComfyUI's Flux workflows end to end with tiny models through the real executor."""

from __future__ import annotations

import copy

import pytest
from flux_markers import needs_samplers

from loom.testing import Txt2ImgIds, txt2img_prompt

pytestmark = needs_samplers


def loaders(weight_dtype: str = "default") -> dict:
    return {
        "1": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "tiny-flux.safetensors", "weight_dtype": weight_dtype},
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


def custom_advanced(width=64, height=48, batch=1, weight_dtype="default") -> dict:
    """ComfyUI's Flux dev template: SamplerCustomAdvanced, BasicGuider, FluxGuidance, ModelSamplingFlux."""
    return {
        **loaders(weight_dtype),
        "4": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "a (red:1.2) fox", "clip": ["2", 0]},
        },
        "5": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["4", 0], "guidance": 3.5}},
        "6": {
            "class_type": "ModelSamplingFlux",
            "inputs": {
                "model": ["1", 0],
                "max_shift": 1.15,
                "base_shift": 0.5,
                "width": width,
                "height": height,
            },
        },
        "7": {"class_type": "BasicGuider", "inputs": {"model": ["6", 0], "conditioning": ["5", 0]}},
        "8": {
            "class_type": "BasicScheduler",
            "inputs": {"model": ["6", 0], "scheduler": "simple", "steps": 3, "denoise": 1.0},
        },
        "9": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "10": {"class_type": "RandomNoise", "inputs": {"noise_seed": 42}},
        "11": {
            "class_type": "EmptySD3LatentImage",
            "inputs": {"width": width, "height": height, "batch_size": batch},
        },
        "12": {
            "class_type": "SamplerCustomAdvanced",
            "inputs": {
                "noise": ["10", 0],
                "guider": ["7", 0],
                "sampler": ["9", 0],
                "sigmas": ["8", 0],
                "latent_image": ["11", 0],
            },
        },
        "13": {"class_type": "VAEDecode", "inputs": {"samples": ["12", 0], "vae": ["3", 0]}},
        "14": {"class_type": "SaveImage", "inputs": {"filename_prefix": "f", "images": ["13", 0]}},
    }


def ksampler_flux(width=64, height=64) -> dict:
    """KSampler at cfg 1 with CLIPTextEncodeFlux (schnell-style prompts, guidance in the node)."""
    return txt2img_prompt(
        None,
        loaders=loaders(),
        model=["1", 0],
        clip=["2", 0],
        vae=["3", 0],
        ids=Txt2ImgIds(
            positive="4", negative="5", latent="11", sampler="12", decode="13", output="14"
        ),
        positive=flux_encode("a fox", "a red fox"),
        negative=flux_encode("", ""),
        latent_class="EmptySD3LatentImage",
        width=width,
        height=height,
        seed=7,
        steps=2,
        cfg=1.0,
        scheduler="simple",
        filename_prefix="k",
    )


def flux_encode(clip_l: str, t5xxl: str) -> dict:
    return {
        "class_type": "CLIPTextEncodeFlux",
        "inputs": {"clip": ["2", 0], "clip_l": clip_l, "t5xxl": t5xxl, "guidance": 3.5},
    }


def run(runtime, prompt: dict):
    from loom.executor.executor import Executor

    executor = Executor(runtime)
    validated = executor.validate(copy.deepcopy(prompt))
    result = executor.execute("test", validated.prompt, validated.outputs, {})
    assert result.error is None, result.error.get("exception_message")
    return result


def image_of(result, node: str = "13"):
    return result.values[node][0][0]


def runtime_with(base_dir, **settings):
    from loom.runtime import Runtime
    from loom.settings import Settings

    return Runtime(
        Settings(
            base_directory=base_dir,
            load_custom_nodes=False,
            cpu_only=True,
            **settings,
        )
    )


@pytest.mark.parametrize(
    ("width", "height", "batch", "weight_dtype"),
    [(64, 48, 1, "default"), (32, 32, 2, "fp8_e4m3fn")],
    ids=["non-square", "batch2-fp8"],
)
def test_dev_template_runs_and_saves_images(runtime, base_dir, width, height, batch, weight_dtype):
    run(runtime, custom_advanced(width, height, batch, weight_dtype))
    images = sorted((base_dir / "output").glob("f_*.png"))
    assert len(images) == batch
    from PIL import Image

    assert Image.open(images[0]).size == (width, height)


def test_ksampler_with_clip_text_encode_flux_at_cfg_1_skips_the_negative(
    runtime, base_dir, monkeypatch
):
    from loom_flux.model import FluxModel

    batches: list[int] = []
    original = FluxModel.apply_model

    def spy(self, x, sigma, cond):
        batches.append(x.shape[0])
        return original(self, x, sigma, cond)

    monkeypatch.setattr(FluxModel, "apply_model", spy)
    run(runtime, ksampler_flux())
    assert batches == [1, 1]  # two steps, positive only
    assert len(list((base_dir / "output").glob("k_*.png"))) == 1


def test_partial_loading_under_a_vram_budget_gives_the_full_load_image(base_dir):
    import torch

    streamed_runtime = runtime_with(base_dir, vram_budget_bytes=256 * 2**10)
    memory = streamed_runtime.memory
    load, dit_loads = memory.load, []

    def spy(handles, extra_memory=0):
        load(handles, extra_memory)
        dit_loads.extend(
            m.partial for m in memory.accounting().models if m.name.startswith("flux-dit")
        )

    memory.load = spy
    streamed = run(streamed_runtime, custom_advanced())
    assert dit_loads and all(dit_loads)  # the DiT ran with its weights streamed per forward
    full = run(runtime_with(base_dir), custom_advanced())
    torch.testing.assert_close(image_of(streamed), image_of(full), atol=1e-5, rtol=0)


def test_schnell_style_img2img_with_a_long_prompt(runtime, base_dir, tiny_models):
    import numpy as np
    from loom_flux.tiny import dit_state, save, tiny_spec
    from PIL import Image

    save(
        dit_state(tiny_spec(guidance=False).dit, seed=9),
        base_dir / "models" / "diffusion_models" / "tiny-schnell.safetensors",
    )
    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(runtime.settings.input_dir / "in.png")
    prompt = ksampler_flux()
    prompt["1"]["inputs"]["unet_name"] = "tiny-schnell.safetensors"
    prompt["4"]["inputs"]["t5xxl"] = " ".join(["a long prompt about a fox"] * 60)
    prompt["20"] = {"class_type": "LoadImage", "inputs": {"image": "in.png"}}
    prompt["21"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["20", 0], "vae": ["3", 0]}}
    prompt["12"]["inputs"]["latent_image"] = ["21", 0]
    prompt["12"]["inputs"]["denoise"] = 0.6
    result = run(runtime, prompt)
    assert image_of(result).shape == (1, 48, 64, 3)


def _edit_prompt(base_dir, runtime, unet: str, in_channels: int, conditioning: str) -> dict:
    import numpy as np
    from loom_flux.tiny import dit_state, save, tiny_spec
    from PIL import Image

    save(
        dit_state(tiny_spec(in_channels=in_channels).dit, seed=11),
        base_dir / "models" / "diffusion_models" / unet,
    )
    pixels = np.random.default_rng(0).integers(0, 255, (32, 32, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    pixels[8:24, 8:24, 3] = 0  # transparent square = area to inpaint
    Image.fromarray(pixels, "RGBA").save(runtime.settings.input_dir / "edit.png")
    prompt = ksampler_flux(32, 32)
    prompt["1"]["inputs"]["unet_name"] = unet
    prompt["20"] = {"class_type": "LoadImage", "inputs": {"image": "edit.png"}}
    inputs = {"positive": ["4", 0], "negative": ["5", 0], "vae": ["3", 0], "pixels": ["20", 0]}
    if conditioning == "InpaintModelConditioning":
        inputs |= {"mask": ["20", 1], "noise_mask": True}
    prompt["21"] = {"class_type": conditioning, "inputs": inputs}
    prompt["12"]["inputs"] |= {
        "positive": ["21", 0],
        "negative": ["21", 1],
        "latent_image": ["21", 2],
    }
    return prompt


@pytest.mark.parametrize(
    ("in_channels", "conditioning"),
    [(384, "InpaintModelConditioning"), (128, "InstructPixToPixConditioning")],
    ids=["fill", "canny-depth"],
)
def test_fill_and_control_models_take_their_concat_inputs(
    runtime, base_dir, in_channels, conditioning
):
    from loom_flux.model import FluxModel

    seen: list[int] = []
    original = FluxModel.apply_model

    def spy(self, x, sigma, cond):
        seen.append(x.shape[1] + cond["c_concat"].shape[1])
        return original(self, x, sigma, cond)

    FluxModel.apply_model = spy
    try:
        prompt = _edit_prompt(
            base_dir, runtime, f"tiny-{in_channels}.safetensors", in_channels, conditioning
        )
        result = run(runtime, prompt)
    finally:
        FluxModel.apply_model = original
    assert seen and set(seen) == {in_channels // 4}
    assert image_of(result).shape == (1, 32, 32, 3)


def test_fill_model_without_its_mask_inputs_names_node_and_fix(runtime, base_dir):
    from loom.executor.executor import Executor

    prompt = _edit_prompt(
        base_dir, runtime, "tiny-fill.safetensors", 384, "InpaintModelConditioning"
    )
    prompt["12"]["inputs"] |= {"positive": ["4", 0], "negative": ["5", 0]}
    prompt["12"]["inputs"]["latent_image"] = ["11", 0]
    executor = Executor(runtime)
    validated = executor.validate(copy.deepcopy(prompt))
    result = executor.execute("test", validated.prompt, validated.outputs, {})
    assert result.error is not None
    message = result.error["exception_message"]
    assert "InpaintModelConditioning" in message and result.error["node_id"] == "12"


def test_cli_runs_the_dev_template_under_a_vram_budget(base_dir):
    import json
    import subprocess
    import sys
    from pathlib import Path

    workflow = base_dir / "flux_dev.json"
    workflow.write_text(json.dumps(custom_advanced()), encoding="utf-8")
    script = Path(sys.executable).parent / "loom"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "loom.cli.main"]
    result = subprocess.run(
        [
            *command,
            "--base-directory",
            str(base_dir),
            "--cpu",
            "--vram-budget",
            "0.001",
            "run",
            "-q",
            str(workflow),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    paths = result.stdout.split()
    assert len(paths) == 1 and Path(paths[0]).name.startswith("f_")
