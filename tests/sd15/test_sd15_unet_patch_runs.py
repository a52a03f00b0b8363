"""The UNet patch nodes (SelfAttentionGuidance, HyperTile, TomePatchModel,
PatchModelAddDownscale) and FreSca in SD1.5 txt2img prompts through the real executor: each
changes the image, twice the same; settings that leave ComfyUI's image alone leave it bitwise.

The checkpoint is the tiny SD1.5 one with attention at full latent resolution as well, where
HyperTile (depth 0) and ToMe work."""

from __future__ import annotations

import attrs
import pytest
import torch
from sd15_markers import needs_samplers
from test_sd15_workflows import run, txt2img

pytestmark = [needs_samplers]

ATTENTION_EVERYWHERE = "tiny-attn.safetensors"


@pytest.fixture(scope="module")
def attention_checkpoint(tmp_path_factory):
    from loom_sd15.tiny import checkpoint_state, save_checkpoint, tiny_spec

    spec = tiny_spec()
    spec = attrs.evolve(spec, unet=attrs.evolve(spec.unet, attention_levels=(0, 1)))
    path = tmp_path_factory.mktemp("attn") / ATTENTION_EVERYWHERE
    return save_checkpoint(path, checkpoint_state(spec, seed=0))


@pytest.fixture
def runtime(base_dir, attention_checkpoint, loom_runtime):
    (base_dir / "models" / "checkpoints" / ATTENTION_EVERYWHERE).symlink_to(attention_checkpoint)
    extra = [base_dir / "extra_model_paths.yaml"]
    return loom_runtime("sd15", "samplers", settings={"extra_model_paths": extra})


def patched(node: str, **inputs) -> dict:
    prompt = txt2img(steps=2)
    prompt["4"]["inputs"]["ckpt_name"] = ATTENTION_EVERYWHERE
    if node:
        prompt["20"] = {"class_type": node, "inputs": {"model": ["4", 0], **inputs}}
        prompt["3"]["inputs"]["model"] = ["20", 0]
    return prompt


def latent_of(result) -> torch.Tensor:
    return result.values["3"][0][0]["samples"]


@pytest.fixture
def plain(runtime):
    return latent_of(run(runtime, patched("")))


CHANGING = [
    ("SelfAttentionGuidance", {"scale": 0.5, "blur_sigma": 2.0}),
    ("HyperTile", {"tile_size": 32, "swap_size": 2, "max_depth": 0, "scale_depth": False}),
    ("TomePatchModel", {"ratio": 0.5}),
    (
        "PatchModelAddDownscale",
        {
            "block_number": 3,
            "downscale_factor": 2.0,
            "start_percent": 0.0,
            "end_percent": 0.35,
            "downscale_after_skip": True,
            "downscale_method": "bicubic",
            "upscale_method": "bicubic",
        },
    ),
    ("FreSca", {"scale_low": 1.0, "scale_high": 1.25, "freq_cutoff": 2}),
]


@pytest.mark.parametrize(("node", "inputs"), CHANGING, ids=[n for n, _ in CHANGING])
def test_node_changes_the_image_deterministically(runtime, plain, node, inputs):
    first = latent_of(run(runtime, patched(node, **inputs)))
    again = latent_of(run(runtime, patched(node, **inputs)))
    assert torch.equal(first, again)
    assert (first - plain).abs().mean() > 1e-3 * plain.abs().mean()


NEUTRAL = [
    ("SelfAttentionGuidance", {"scale": 0.0, "blur_sigma": 2.0}),
    ("TomePatchModel", {"ratio": 0.0}),
    # tiles of at least 256 / 8 = 32 tokens a side: an 8 x 8 latent is one tile
    ("HyperTile", {"tile_size": 256, "swap_size": 2, "max_depth": 1, "scale_depth": False}),
    (  # the window [sigma(0.0), sigma(0.0)] holds no step's sigma
        "PatchModelAddDownscale",
        {
            "block_number": 3,
            "downscale_factor": 2.0,
            "start_percent": 0.0,
            "end_percent": 0.0,
            "downscale_after_skip": False,
            "downscale_method": "bislerp",
            "upscale_method": "area",
        },
    ),
]


@pytest.mark.parametrize(("node", "inputs"), NEUTRAL, ids=[n for n, _ in NEUTRAL])
def test_neutral_settings_leave_the_image_bitwise(runtime, plain, node, inputs):
    assert torch.equal(latent_of(run(runtime, patched(node, **inputs))), plain)
