"""PhotoMaker v1 on a tiny SDXL checkpoint through the executor: PhotoMakerLoader ->
PhotoMakerEncode -> KSampler. The conditioning is the prompt's with one token fused with the
ID image (a plain prompt is a single token group, so ComfyUI's trigger removal, which drops
the group numbered like the trigger word, removes nothing from it); the sample changes,
deterministically."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("loom_samplers")
pytest.importorskip("loom_sdxl")
cv_tiny = pytest.importorskip("loom_clip_vision.tiny")

from loom.testing import run_prompt  # noqa: E402


@pytest.fixture
def runtime(tmp_path, shared_tokenizers, loom_runtime):
    from loom_sdxl.tiny import write_tiny_checkpoint
    from PIL import Image
    from safetensors.torch import save_file

    models = tmp_path / "models"
    write_tiny_checkpoint(models / "checkpoints" / "sdxl.safetensors", seed=0)
    # 24 (visual_projection) + 72 = 96: the tiny SDXL's CLIP-L + CLIP-G width
    state = cv_tiny.photomaker_state(cv_tiny.tiny_clip_config(), 72, seed=3)
    (models / "photomaker").mkdir(parents=True)
    save_file(state, str(models / "photomaker" / "photomaker-v1.safetensors"))
    (tmp_path / "extra_model_paths.yaml").write_text(
        f"shared:\n  tokenizers: {shared_tokenizers}\n", encoding="utf-8"
    )
    (tmp_path / "input").mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (40, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "input" / "face.png")
    return loom_runtime(
        "sdxl", "samplers", "clip-vision", "sd15",
        settings={"extra_model_paths": [tmp_path / "extra_model_paths.yaml"]},
    )  # fmt: skip


def prompt(photomaker: bool = True) -> dict:
    text = "a man photomaker smiling"
    out = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl.safetensors"}},
        "2": {
            "class_type": "PhotoMakerLoader",
            "inputs": {"photomaker_model_name": "photomaker-v1.safetensors"},
        },
        "3": {"class_type": "LoadImage", "inputs": {"image": "face.png"}},
        "4": {
            "class_type": "PhotoMakerEncode",
            "inputs": {"photomaker": ["2", 0], "image": ["3", 0], "clip": ["1", 1], "text": text},
        },
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "6": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1},
        },
        "7": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 1,
                "steps": 2,
                "cfg": 5.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["1", 0],
                "positive": ["4", 0],
                "negative": ["5", 0],
                "latent_image": ["6", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "pm", "images": ["8", 0]}},
    }
    if not photomaker:
        out["4"] = {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "a man photomaker smiling", "clip": ["1", 1]},
        }
        del out["2"], out["3"]
    return out


def test_photomaker_fuses_one_token_and_changes_the_sample(runtime):
    fused = run_prompt(runtime, prompt())
    assert fused.ok, fused.error
    plain = run_prompt(runtime, prompt(photomaker=False), prompt_id="plain")
    assert plain.ok, plain.error
    again = run_prompt(runtime, prompt(), prompt_id="again")

    [(cond, options)] = fused.value("4")
    [(text_cond, text_options)] = plain.value("4")
    assert cond.shape == text_cond.shape and cond.shape[-1] == 96
    others = [i for i in range(cond.shape[1]) if i != 2]
    assert torch.equal(cond[:, others], text_cond[:, others])  # the prompt, trigger kept
    assert not torch.allclose(cond[:, 2], text_cond[:, 2])  # "man" carries the ID
    assert torch.equal(options["pooled_output"], text_options["pooled_output"])
    latent = fused.value("7")["samples"]
    assert not torch.allclose(latent, plain.value("7")["samples"], atol=1e-4)
    assert torch.equal(latent, again.value("7")["samples"])
