"""Flux Redux end to end with tiny models: ComfyUI's Redux template (CLIPVisionLoader ->
LoadImage -> CLIPVisionEncode -> StyleModelApply -> KSampler on Flux) through the executor.
The style tokens reach the DiT through the conditioning only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("loom_samplers")
flux_tiny = pytest.importorskip("loom_flux.tiny")
cv_tiny = pytest.importorskip("loom_clip_vision.tiny")

from loom.testing import run_prompt  # noqa: E402


@pytest.fixture
def runtime(tmp_path, loom_runtime):
    from loom_clip_vision.style import ReduxConfig
    from PIL import Image

    models = tmp_path / "models"
    spec = flux_tiny.tiny_spec()
    flux_tiny.write_tiny_files(models, seed=0)
    siglip = cv_tiny.tiny_siglip_config()
    cv_tiny.save(
        cv_tiny.vision_state(siglip, seed=4), models / "clip_vision" / "sigclip.safetensors"
    )
    text_dim = spec.dit.context_dim  # Redux writes tokens as wide as T5's
    redux = ReduxConfig(image_dim=siglip.hidden_size, hidden_dim=3 * text_dim, text_dim=text_dim)
    cv_tiny.save(cv_tiny.redux_state(redux, seed=5), models / "style_models" / "redux.safetensors")
    (tmp_path / "input").mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "input" / "style.png")
    return loom_runtime("flux", "samplers", "clip-vision", "sd15")


def redux_prompt(
    style: bool = True, strength: float = 1.0, strength_type: str = "multiply"
) -> dict:
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
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["2", 0]}},
        "5": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "sigclip.safetensors"}},
        "6": {"class_type": "LoadImage", "inputs": {"image": "style.png"}},
        "7": {
            "class_type": "CLIPVisionEncode",
            "inputs": {"clip_vision": ["5", 0], "image": ["6", 0], "crop": "center"},
        },
        "8": {
            "class_type": "StyleModelLoader",
            "inputs": {"style_model_name": "redux.safetensors"},
        },
        "9": {
            "class_type": "StyleModelApply",
            "inputs": {
                "conditioning": ["4", 0],
                "style_model": ["8", 0],
                "clip_vision_output": ["7", 0],
                "strength": strength,
                "strength_type": strength_type,
            },
        },
        "10": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["9", 0], "guidance": 3.5}},
        "11": {
            "class_type": "EmptySD3LatentImage",
            "inputs": {"width": 32, "height": 32, "batch_size": 1},
        },
        "12": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 3,
                "steps": 2,
                "cfg": 1.0,
                "sampler_name": "euler",
                "scheduler": "simple",
                "denoise": 1.0,
                "model": ["1", 0],
                "positive": ["10", 0],
                "negative": ["4", 0],
                "latent_image": ["11", 0],
            },
        },
        "13": {"class_type": "VAEDecode", "inputs": {"samples": ["12", 0], "vae": ["3", 0]}},
        "14": {
            "class_type": "SaveImage",
            "inputs": {"filename_prefix": "redux", "images": ["13", 0]},
        },
    }
    if not style:
        prompt["10"]["inputs"]["conditioning"] = ["4", 0]
        for node in ("5", "6", "7", "8", "9"):
            del prompt[node]
    return prompt


def test_redux_tokens_reach_flux_and_change_the_image(runtime):
    styled = run_prompt(runtime, redux_prompt())
    assert styled.ok, styled.error
    plain = run_prompt(runtime, redux_prompt(style=False), prompt_id="plain")
    assert plain.ok, plain.error

    cond = styled.value("9")[0][0]
    text = styled.value("4")[0][0]
    assert cond.shape == (1, text.shape[1] + 16, text.shape[2])  # 16 SigLIP patches
    latent = styled.value("12")["samples"]
    assert not torch.allclose(latent, plain.value("12")["samples"])


def test_attn_bias_at_strength_0_hides_the_style_tokens_from_flux(runtime):
    # log(0) = -inf on the style tokens' columns: no text or image token attends to them,
    # so the sample is the one without Redux; other strengths change it
    hidden = run_prompt(runtime, redux_prompt(strength=0.0, strength_type="attn_bias"))
    plain = run_prompt(runtime, redux_prompt(style=False), prompt_id="plain")
    biased = run_prompt(
        runtime, redux_prompt(strength=0.5, strength_type="attn_bias"), prompt_id="biased"
    )
    assert hidden.ok and plain.ok and biased.ok, (hidden.error, plain.error, biased.error)

    options = hidden.value("9")[0][1]
    assert options["attention_mask"].shape[-1] == hidden.value("9")[0][0].shape[1] + 1
    latent = hidden.value("12")["samples"]
    torch.testing.assert_close(latent, plain.value("12")["samples"], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(biased.value("12")["samples"], latent, atol=1e-4)
