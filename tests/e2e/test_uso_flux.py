"""Flux USO end to end with tiny models: CLIPVisionLoader (SigLIP) -> CLIPVisionEncode ->
ModelPatchLoader -> USOStyleReference -> KSampler through the executor; the style reaches
the DiT (the sample changes, deterministically) and bad inputs name node, input and file."""

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
    from PIL import Image
    from safetensors.torch import save_file

    models = tmp_path / "models"
    spec = flux_tiny.tiny_spec()
    flux_tiny.write_tiny_files(models, seed=0)
    siglip = cv_tiny.tiny_siglip_config(layers=20)  # USO reads layers -20, -11 and -2
    cv_tiny.save(cv_tiny.vision_state(siglip, seed=4), models / "clip_vision" / "sig.safetensors")
    short = cv_tiny.tiny_siglip_config(layers=3)
    cv_tiny.save(cv_tiny.vision_state(short, seed=4), models / "clip_vision" / "sig3.safetensors")
    tokens = (siglip.image_size // siglip.patch_size) ** 2
    state = flux_tiny.uso_projector_state(tokens, siglip.hidden_size, spec.dit.hidden_size)
    (models / "model_patches").mkdir()
    save_file(state, str(models / "model_patches" / "uso-projector.safetensors"))
    (tmp_path / "input").mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "input" / "style.png")
    return loom_runtime("flux", "samplers", "clip-vision", "sd15")


def uso_prompt(style: bool = True, vision: str = "sig.safetensors") -> dict:
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
        "5": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": vision}},
        "6": {"class_type": "LoadImage", "inputs": {"image": "style.png"}},
        "7": {
            "class_type": "CLIPVisionEncode",
            "inputs": {"clip_vision": ["5", 0], "image": ["6", 0], "crop": "center"},
        },
        "8": {"class_type": "ModelPatchLoader", "inputs": {"name": "uso-projector.safetensors"}},
        "9": {
            "class_type": "USOStyleReference",
            "inputs": {"model": ["1", 0], "model_patch": ["8", 0], "clip_vision_output": ["7", 0]},
        },
        "11": {
            "class_type": "EmptySD3LatentImage",
            "inputs": {"width": 32, "height": 32, "batch_size": 1},
        },
        "12": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 3,
                "steps": 2,
                "cfg": 2.0,
                "sampler_name": "euler",
                "scheduler": "simple",
                "denoise": 1.0,
                "model": ["9", 0],
                "positive": ["4", 0],
                "negative": ["4", 0],
                "latent_image": ["11", 0],
            },
        },
        "13": {"class_type": "VAEDecode", "inputs": {"samples": ["12", 0], "vae": ["3", 0]}},
        "14": {
            "class_type": "SaveImage",
            "inputs": {"filename_prefix": "uso", "images": ["13", 0]},
        },
    }
    if not style:
        prompt["12"]["inputs"]["model"] = ["1", 0]
        for node in ("5", "6", "7", "8", "9"):
            del prompt[node]
    return prompt


def test_uso_style_tokens_reach_flux(runtime):
    styled = run_prompt(runtime, uso_prompt())
    assert styled.ok, styled.error
    plain = run_prompt(runtime, uso_prompt(style=False), prompt_id="plain")
    assert plain.ok, plain.error
    again = run_prompt(runtime, uso_prompt(), prompt_id="again")
    latent = styled.value("12")["samples"]
    assert not torch.allclose(latent, plain.value("12")["samples"], atol=1e-4)
    assert torch.equal(latent, again.value("12")["samples"])
    patched = styled.value("9")
    assert patched.text_prefix is not None and plain.value("1").text_prefix is None


def test_a_tower_without_twenty_layers_names_node_and_input(runtime):
    record = run_prompt(runtime, uso_prompt(vision="sig3.safetensors"))
    assert not record.ok
    message = record.error["exception_message"]
    assert "USOStyleReference: input 'clip_vision_output' needs a SigLIP encoder's" in message
    assert "it has 3" in message
