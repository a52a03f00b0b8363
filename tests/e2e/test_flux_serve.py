"""A Flux workflow (KSampler at cfg 1 + CLIPTextEncodeFlux, tiny models) through `loom serve`,
as a ComfyUI websocket client runs it, giving the same image as `loom run`."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

pytest.importorskip("loom_http")
pytest.importorskip("loom_samplers")
tiny = pytest.importorskip("loom_flux.tiny")

from test_serve_txt2img import fetch, free_port, loom, run_prompt, start_server  # noqa: E402

TOKENIZERS = Path(__file__).resolve().parents[3] / "shared" / "data" / "tokenizers"
if not (TOKENIZERS / "clip_l" / "vocab.json").is_file():
    TOKENIZERS = Path("/work/shared/data/tokenizers")


def flux_prompt() -> dict:
    """ComfyUI's schnell-style template; the sampler is node 3, as the websocket helper expects."""
    return {
        "1": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "tiny-flux.safetensors", "weight_dtype": "fp8_e4m3fn"},
        },
        "2": {
            "class_type": "DualCLIPLoader",
            "inputs": {
                "clip_name1": "tiny-t5.safetensors",
                "clip_name2": "tiny-clip-l.safetensors",
                "type": "flux",
            },
        },
        "4": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny-ae.safetensors"}},
        "5": {
            "class_type": "CLIPTextEncodeFlux",
            "inputs": {"clip": ["2", 0], "clip_l": "a fox", "t5xxl": "a red fox", "guidance": 3.5},
        },
        "6": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["5", 0]}},
        "7": {
            "class_type": "EmptySD3LatentImage",
            "inputs": {"width": 64, "height": 48, "batch_size": 1},
        },
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 5,
                "steps": 3,
                "cfg": 1.0,
                "sampler_name": "euler",
                "scheduler": "simple",
                "denoise": 1.0,
                "model": ["1", 0],
                "positive": ["5", 0],
                "negative": ["6", 0],
                "latent_image": ["7", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "flux", "images": ["8", 0]}},
    }


@pytest.mark.slow
def test_flux_workflow_over_http_matches_loom_run(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("LOOM_TOKENIZERS_PATH", str(TOKENIZERS))
    tiny.write_tiny_files(tmp_path / "models", seed=0)
    prompt = flux_prompt()
    port = free_port()
    process = start_server(tmp_path, port)
    address = f"127.0.0.1:{port}"
    try:
        prompt_id, seen, previews = asyncio.run(run_prompt(address, prompt))
        assert previews == 3 and seen.count("progress") == 3
        history = json.loads(fetch(address, f"/history/{prompt_id}"))[prompt_id]
        assert history["status"]["status_str"] == "success"
        (image,) = history["outputs"]["9"]["images"]
        served = Image.open(
            io.BytesIO(fetch(address, f"/view?filename={image['filename']}&type=output"))
        )
        assert served.size == (64, 48)
    finally:
        process.terminate()
        process.wait(timeout=20)
    (tmp_path / "api.json").write_text(json.dumps(prompt))
    cli = loom("--base-directory", str(tmp_path), "run", "api.json", "-q", cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr
    assert Image.open(cli.stdout.split()[0]).tobytes() == served.tobytes()
