"""``loom demo --family sdxl``: an SDXL txt2img workflow (UI format) on a tiny SDXL model.

Like loom-sd15's demo (whose tokenizer it reuses): the first run builds
``models/checkpoints/loom-demo-sdxl-tiny.safetensors`` (random weights in SDXL's single-file
layout, CLIP-L and bigG included, its metadata naming the demo tokenizer); the bundled UI
workflow (``CLIPTextEncodeSDXL`` positive, ``CLIPTextEncode`` negative, dpmpp_2m/karras) then
runs through the whole stack. This module also owns the ``demo`` command, which picks the
family with ``--family`` (sd15 runs loom-sd15's demo unchanged).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import click

DEMO_CHECKPOINT = "loom-demo-sdxl-tiny.safetensors"


def ensure_demo_files(models_dir: Path) -> Path:
    """Build the demo tokenizer (sd15's) and the tiny SDXL checkpoint once."""
    from loom_sd15.demo import ensure_demo_files as ensure_files

    from loom_sdxl.tiny import write_tiny_checkpoint

    return ensure_files(models_dir, DEMO_CHECKPOINT, write_tiny_checkpoint)


def bundled_workflow() -> dict[str, Any]:
    """An SDXL text-to-image workflow in ComfyUI's UI format, shipped with this plugin."""
    path = resources.files("loom_sdxl").joinpath("workflows", "txt2img_sdxl.json")
    return json.loads(path.read_text(encoding="utf-8"))


def run_demo(runtime: Any, steps: int | None = None, *, progress: bool = False) -> list[Path]:
    """Build the demo files if needed, run the bundled workflow, return the written PNGs
    (``progress``: show model loads and sampling progress on stderr)."""
    from loom_sd15.demo import run_demo_workflow

    return run_demo_workflow(
        runtime,
        bundled_workflow(),
        ensure_demo_files,
        DEMO_CHECKPOINT,
        "loom_demo_sdxl",
        steps,
        progress=progress,
    )


@click.command("demo")
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help="Sampling steps (default: the workflow's 20).",
)
@click.option(
    "--family",
    type=click.Choice(["sd15", "sdxl"]),
    default="sd15",
    show_default=True,
    help="Which tiny model family to run.",
)
@click.pass_obj
def demo_command(factory: Any, steps: int | None, family: str) -> int:
    """Run a txt2img workflow on a tiny built-in model (SD1.5 or SDXL layout)."""
    from loom_sd15.demo import run_demo as run_sd15_demo

    from loom.errors import LoomError

    runtime = factory.runtime()
    run = run_demo if family == "sdxl" else run_sd15_demo
    try:
        paths = run(runtime, steps, progress=True)
    except LoomError as exc:
        raise click.ClickException(
            f"{exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else "")
        ) from exc
    for path in paths:
        click.echo(str(path))
    return 0
