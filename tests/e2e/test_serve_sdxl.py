"""SDXL through `loom serve` and `loom run`: the bundled SDXL UI workflow on the tiny demo
checkpoint gives the same image from both frontends, and a truncated SDXL file is a clear
error naming node and file while the server keeps serving."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

pytest.importorskip("loom_http")
pytest.importorskip("loom_samplers")
sdxl_demo = pytest.importorskip("loom_sdxl.demo")
from loom_sd15.demo import set_widget  # noqa: E402
from test_serve_txt2img import fetch, free_port, loom, run_prompt, start_server  # noqa: E402


@pytest.fixture
def workspace(tmp_path):
    sdxl_demo.ensure_demo_files(tmp_path / "models")
    workflow = sdxl_demo.bundled_workflow()
    set_widget(workflow, "CheckpointLoaderSimple", 0, sdxl_demo.DEMO_CHECKPOINT)
    set_widget(workflow, "EmptyLatentImage", 0, 64)
    set_widget(workflow, "EmptyLatentImage", 1, 64)
    set_widget(workflow, "KSampler", 0, 7)
    set_widget(workflow, "KSampler", 2, 2)
    (tmp_path / "workflow.json").write_text(json.dumps(workflow))
    converted = loom("--base-directory", str(tmp_path), "convert", "workflow.json", cwd=tmp_path)
    assert converted.returncode == 0, converted.stderr
    prompt = json.loads(converted.stdout)
    assert prompt["6"]["class_type"] == "CLIPTextEncodeSDXL"
    checkpoint = tmp_path / "models" / "checkpoints" / sdxl_demo.DEMO_CHECKPOINT
    data = checkpoint.read_bytes()
    (checkpoint.parent / "truncated-sdxl.safetensors").write_bytes(data[: len(data) // 3])
    return tmp_path, prompt


@pytest.mark.slow
def test_sdxl_workflow_over_http_matches_loom_run_and_bad_files_do_not_stop_it(workspace):
    from PIL import Image

    base, prompt = workspace
    port = free_port()
    process = start_server(base, port)
    address = f"127.0.0.1:{port}"
    try:
        broken = json.loads(json.dumps(prompt))
        broken["4"]["inputs"]["ckpt_name"] = "truncated-sdxl.safetensors"
        with pytest.raises(AssertionError) as error:
            asyncio.run(run_prompt(address, broken))
        assert "truncated-sdxl.safetensors is truncated" in str(error.value)
        prompt_id, _, previews = asyncio.run(run_prompt(address, prompt))
        assert previews == 2
        history = json.loads(fetch(address, f"/history/{prompt_id}"))[prompt_id]
        (image,) = history["outputs"]["9"]["images"]
        served = Image.open(
            io.BytesIO(fetch(address, f"/view?filename={image['filename']}&type=output"))
        )
        assert served.size == (64, 64)
    finally:
        process.terminate()
        process.wait(timeout=20)
    (base / "api.json").write_text(json.dumps(prompt))
    cli = loom("--base-directory", str(base), "run", "api.json", "-q", cwd=base)
    assert cli.returncode == 0, cli.stderr
    assert Image.open(cli.stdout.split()[0]).tobytes() == served.tobytes()
