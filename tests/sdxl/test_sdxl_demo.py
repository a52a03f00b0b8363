"""``loom demo --family sdxl`` and the bundled SDXL UI-format workflow."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch
from sdxl_markers import needs_samplers


def _loom(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "loom"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "loom.cli.main"]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@needs_samplers
def test_loom_demo_family_sdxl_prints_a_png_path(tmp_path):
    first = _loom("demo", "--family", "sdxl", "--steps", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "loaded checkpoint loom-demo-sdxl-tiny.safetensors" in first.stderr
    assert re.search(r"node 3 \(KSampler\): 100%.* 2/2 ", first.stderr)
    png = Path(first.stdout.strip().splitlines()[-1])
    assert png.suffix == ".png" and png.is_file() and "loom_demo_sdxl" in png.name
    assert (tmp_path / "models" / "checkpoints" / "loom-demo-sdxl-tiny.safetensors").is_file()


@needs_samplers
def test_bundled_ui_workflow_converts_and_runs_on_the_tiny_checkpoint(runtime):
    from loom_sd15.demo import set_widget
    from loom_sdxl.demo import bundled_workflow
    from test_sdxl_workflows import base_prompt, image_of, run

    from loom.frontend import convert_workflow

    workflow = bundled_workflow()
    set_widget(workflow, "CheckpointLoaderSimple", 0, "sdxl.safetensors")
    set_widget(workflow, "EmptyLatentImage", 0, 64)
    set_widget(workflow, "EmptyLatentImage", 1, 64)
    set_widget(workflow, "KSampler", 2, 3)
    prompt = convert_workflow(workflow, runtime.registry)
    assert prompt["6"]["inputs"]["text_g"].startswith("a glass bottle")
    assert prompt["6"]["inputs"]["crop_w"] == 0 and prompt["6"]["inputs"]["width"] == 1024
    assert prompt["3"]["inputs"]["sampler_name"] == "dpmpp_2m"
    image = image_of(run(runtime, prompt))
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(image).all()
    # the same graph in API format gives the same image
    api = base_prompt(sdxl_encode=True)
    api["6"]["inputs"] |= {
        "text_g": prompt["6"]["inputs"]["text_g"],
        "text_l": prompt["6"]["inputs"]["text_l"],
    }
    api["7"]["inputs"]["text"] = prompt["7"]["inputs"]["text"]
    api["3"]["inputs"] |= {k: prompt["3"]["inputs"][k] for k in ("seed", "steps", "cfg")}
    assert torch.equal(image, image_of(run(runtime, api)))
