"""A prompt encoded by one family's text encoder, sampled with another family's model, is
reported by the sampler node naming its input and both widths (ComfyUI fails inside the
UNet's cross-attention: "mat1 and mat2 shapes cannot be multiplied"); the same prompt with
the model's own CLIP runs."""

from __future__ import annotations

import pytest

pytest.importorskip("loom_sdxl")
pytest.importorskip("loom_samplers")

from loom.testing import run_prompt


@pytest.fixture
def runtime(tmp_path, shared_tokenizers, loom_runtime):
    from loom_sd15.tiny import write_tiny_checkpoint as write_sd15
    from loom_sdxl.tiny import write_tiny_checkpoint as write_sdxl

    checkpoints = tmp_path / "models" / "checkpoints"
    write_sd15(checkpoints / "sd15.safetensors", seed=0)
    write_sdxl(checkpoints / "sdxl.safetensors", seed=0)
    (tmp_path / "extra_model_paths.yaml").write_text(
        f"shared:\n  tokenizers: {shared_tokenizers}\n", encoding="utf-8"
    )
    return loom_runtime(
        "sd15", "sdxl", "samplers",
        settings={"extra_model_paths": [tmp_path / "extra_model_paths.yaml"]},
    )  # fmt: skip


def txt2img(clip_from: str, sampler: dict) -> dict:
    """SD1.5's MODEL and VAE; the text encoded by the CLIP of node ``clip_from``."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl.safetensors"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": [clip_from, 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": [clip_from, 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": sampler,
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }  # fmt: skip


KSAMPLER = {
    "class_type": "KSampler",
    "inputs": {
        "model": ["1", 0], "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0],
        "seed": 1, "steps": 1, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
        "denoise": 1.0,
    },
}  # fmt: skip

BASIC_GUIDER = {
    "class_type": "BasicGuider",
    "inputs": {"model": ["1", 0], "conditioning": ["3", 0]},
}


def test_sdxl_conditioning_into_an_sd15_ksampler_names_the_node_input_and_widths(runtime):
    from loom_sd15.tiny import tiny_spec as sd15_spec
    from loom_sdxl.tiny import tiny_spec as sdxl_spec

    record = run_prompt(runtime, txt2img("2", KSAMPLER))
    assert not record.ok
    error = record.error
    assert (error["node_id"], error["node_type"]) == ("6", "KSampler")
    sd15_width = sd15_spec().unet.context_dim
    sdxl_width = sdxl_spec().unet.context_dim
    assert sd15_width != sdxl_width
    assert error["exception_message"].startswith(
        f"KSampler: input positive holds conditioning {sdxl_width} wide, but the model "
    )
    assert f"sd15.safetensors) reads text context {sd15_width} wide" in error["exception_message"]
    assert error["exception_type"].endswith("NodeInputError")
    # the engine keeps going: the same prompt with SD1.5's own CLIP runs
    assert run_prompt(runtime, txt2img("1", KSAMPLER), prompt_id="own-clip").ok


def test_sd15_conditioning_into_an_sdxl_ksampler_is_named_by_the_node(runtime):
    """SDXL's model checks only its pooled (ADM) width itself: a prompt of another text
    width is the sampler node's report, as for every family."""
    from loom_sd15.tiny import tiny_spec as sd15_spec
    from loom_sdxl.tiny import tiny_spec as sdxl_spec

    prompt = txt2img("1", KSAMPLER)
    prompt["6"] = {**KSAMPLER, "inputs": {**KSAMPLER["inputs"], "model": ["2", 0]}}
    record = run_prompt(runtime, prompt)
    assert not record.ok
    error = record.error
    assert (error["node_id"], error["node_type"]) == ("6", "KSampler")
    assert error["exception_type"].endswith("NodeInputError")
    sd15_width = sd15_spec().unet.context_dim
    sdxl_width = sdxl_spec().unet.context_dim
    assert error["exception_message"].startswith(
        f"KSampler: input positive holds conditioning {sd15_width} wide, but the model "
    )
    assert f"sdxl.safetensors) reads text context {sdxl_width} wide" in error["exception_message"]


def test_a_guider_node_checks_its_conditioning_too(runtime):
    prompt = txt2img("2", KSAMPLER)
    prompt["6"] = BASIC_GUIDER
    prompt["7"] = {"class_type": "PreviewAny", "inputs": {"source": ["6", 0]}}
    del prompt["8"]
    record = run_prompt(runtime, prompt)
    assert not record.ok and record.error["node_type"] == "BasicGuider"
    assert record.error["exception_message"].startswith(
        "BasicGuider: input conditioning holds conditioning"
    )
