"""ComfyUI 0.8's own SD1.5 / SDXL / Flux.1 workflow templates, run unchanged.

The templates in ``data/comfyui_templates_0_7_64`` (``comfyui-workflow-templates`` 0.7.64, the
version ComfyUI 0.8 pins) run as saved, sizes, steps and seeds included, through ``loom run``
on tiny models of the families and layouts their nodes name (:mod:`template_models`). A user
relies on: the run succeeds and writes the image the template's SaveImage saves, under its
filename prefix, at the template's size, with the workflow embedded; the same prompt queued on
the HTTP server (what the frontend sends for the template) gives the same pixels, so the run is
also deterministic (SDXL-Turbo and Flux Fill everywhere, every large template where it runs).

The templates that render 0.4 to 1.3 megapixels (1024x1024 latents, 20-26 steps) take a minute
or more each on a 2-core CPU even with tiny models, so they run where an accelerator is present
or with ``LOOM_TEST_ALL_TEMPLATES=1``; the others run everywhere.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from pathlib import Path

import attrs
import pytest
import torch

for plugin in (
    "loom_sd15",
    "loom_sdxl",
    "loom_flux",
    "loom_samplers",
    "loom_clip_vision",
    "loom_lora",
):
    pytest.importorskip(plugin)

from template_models import (  # noqa: E402
    TEMPLATES,
    load_template,
    write_inputs,
    write_models,
)

from loom.cli.main import main  # noqa: E402

#: Size (width, height) of the images written for the templates' LoadImage nodes.
INPUT = (96, 64)
ACCELERATOR = torch.cuda.is_available() or torch.backends.mps.is_available()
RUN_LARGE = ACCELERATOR or os.environ.get("LOOM_TEST_ALL_TEMPLATES") == "1"


@attrs.frozen
class Template:
    """One template and the image its SaveImage node writes."""

    name: str
    size: tuple[int, int]
    prefix: str = "ComfyUI"
    large: bool = False
    #: Also queued on the HTTP server (the large ones always are).
    served: bool = False


TEMPLATE_CASES = (
    Template("default", (512, 512), prefix="SD1.5"),
    Template("sdxlturbo_example", (512, 512), served=True),
    Template("flux_canny_model_example", INPUT),
    Template("flux_fill_inpaint_example", INPUT, served=True),
    # ImagePadForOutpaint: left 40, right 104, bottom 104 / left and right 400, bottom 400
    Template("image_flux.1_fill_dev_OneReward", (INPUT[0] + 144, INPUT[1] + 104)),
    Template("flux_fill_outpaint_example", (INPUT[0] + 800, INPUT[1] + 400), large=True),
    Template("sdxl_simple_example", (1024, 1024), large=True),
    Template("sdxl_refiner_prompt_example", (1024, 1024), large=True),
    Template("sdxl_revision_text_prompts", (1024, 1024), large=True),
    Template("flux_schnell", (1024, 1024), large=True),
    Template("flux_schnell_full_text_to_image", (1024, 1024), large=True),
    Template("flux_dev_full_text_to_image", (1024, 1024), large=True),
    Template("flux_dev_checkpoint_example", (1024, 1024), large=True),
    Template("flux1_krea_dev", (1024, 1024), prefix="flux_krea", large=True),
    # FluxKontextImageScale: Kontext's preferred size nearest the input's 3:2 aspect
    Template("flux_kontext_dev_basic", (1248, 832), large=True),
    Template("flux_redux_model_example", (1024, 1024), large=True),
    Template("flux1_dev_uso_reference_image_gen", (1024, 1024), large=True),
)


def _case(template: Template):
    marks = []
    if template.large:
        reason = "0.4-1.3 megapixels: a minute or more on a CPU (LOOM_TEST_ALL_TEMPLATES=1 runs it)"
        marks = [pytest.mark.slow, pytest.mark.skipif(not RUN_LARGE, reason=reason)]
    return pytest.param(template, id=template.name, marks=marks)


@pytest.fixture(autouse=True)
def _plain_cli_environment(monkeypatch):
    """``loom run`` runs in this process: every installed plugin, the test's allocator kept."""
    monkeypatch.delenv("LOOM_PLUGINS", raising=False)
    monkeypatch.delenv("LOOM_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("LOOM_MALLOC", "0")


def workspace(base: Path, name: str) -> Path:
    """``base`` with the tiny models and input images template ``name`` loads."""
    workflow = load_template(name)
    write_models(base / "models", workflow)
    write_inputs(base / "input", workflow, INPUT)
    return base


def loom_run(base: Path, workflow: Path, capsys: pytest.CaptureFixture[str]) -> list[Path]:
    """``loom --base-directory BASE run -q WORKFLOW`` in this process; the files it printed."""
    code = main(["--base-directory", str(base), "run", "-q", str(workflow)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return [Path(line) for line in out.split()]


def saved_images(paths: list[Path], base: Path) -> list[Path]:
    return [path for path in paths if path.parent == base / "output"]


def pixels(path: Path) -> bytes:
    from PIL import Image

    with Image.open(path) as image:
        return image.tobytes()


@pytest.mark.parametrize("template", [_case(t) for t in TEMPLATE_CASES])
def test_template_runs_unchanged(template: Template, tmp_path, capsys):
    from PIL import Image

    base = workspace(tmp_path, template.name)
    file = TEMPLATES / f"{template.name}.json"
    (saved,) = saved_images(loom_run(base, file, capsys), base)
    assert saved.name == f"{template.prefix}_00001_.png"
    with Image.open(saved) as image:
        assert image.size == template.size
        assert any(low < high for low, high in image.getextrema())  # not one flat colour (NaN)
        assert json.loads(image.text["workflow"]) == load_template(template.name)
    if template.served or template.large:
        # what the frontend queues for the template, through the HTTP server: the same image
        # (so also the same on a second run)
        pytest.importorskip("loom_http")
        from loom.workflow import convert_workflow

        runtime = base_runtime(base)
        prompt = convert_workflow(load_template(template.name), runtime.registry)
        served = asyncio.run(serve_once(runtime, prompt))
        with Image.open(io.BytesIO(served)) as image:
            assert image.tobytes() == pixels(saved)


def test_depth_lora_template_is_refused_naming_only_lotus(tmp_path, capsys):
    # flux_depth_lora_example estimates depth with Lotus (an SD2-based model Loom leaves out):
    # every other node type of the template is Loom's, so Lotus is the one reported
    file = TEMPLATES / "flux_depth_lora_example.json"
    code = main(["--base-directory", str(tmp_path), "run", "-q", str(file)])
    _, err = capsys.readouterr()
    assert code == 2
    assert "node LotusConditioning does not exist" in err
    assert err.count("does not exist") == 1 and "Traceback" not in err


def base_runtime(base: Path):
    """A runtime over ``base`` with every installed plugin, as ``loom serve`` builds it."""
    from loom.runtime import Runtime
    from loom.settings import Settings

    return Runtime(Settings(base_directory=base, load_custom_nodes=False))


async def serve_once(runtime, prompt: dict) -> bytes:
    """Queue ``prompt`` on Loom's HTTP app; the bytes of the one image it saved (``/view``)."""
    from aiohttp.test_utils import TestClient, TestServer
    from loom_http.app import make_app
    from loom_http.state import ServerOptions

    async with TestClient(TestServer(make_app(runtime, ServerOptions()))) as client:
        response = await client.post("/prompt", json={"prompt": prompt})
        assert response.status == 200, await response.text()
        prompt_id = (await response.json())["prompt_id"]
        deadline = time.monotonic() + 300
        while not (entry := await (await client.get(f"/history/{prompt_id}")).json()):
            assert time.monotonic() < deadline, f"prompt {prompt_id} never finished"
            await asyncio.sleep(0.05)
        outputs = entry[prompt_id]["outputs"]
        (image,) = [
            image
            for output in outputs.values()
            for image in output.get("images", [])
            if image["type"] == "output"
        ]
        view = await client.get("/view", params={**image, "type": image["type"]})
        assert view.status == 200
        return await view.read()


def test_primitives_and_promoted_widgets_reach_the_inner_nodes(tmp_path):
    from loom.workflow import convert_workflow

    registry = base_runtime(tmp_path).registry

    def convert(name: str) -> dict:
        prompt = convert_workflow(load_template(name), registry)
        return {node_id: node["inputs"] for node_id, node in prompt.items()}

    sdxl = convert("sdxl_simple_example")  # PrimitiveNodes: steps, refiner hand-off, prompts
    assert sdxl["10"]["steps"] == sdxl["11"]["steps"] == 25
    assert sdxl["10"]["end_at_step"] == sdxl["11"]["start_at_step"] == 20
    assert (
        sdxl["6"]["text"]
        == sdxl["15"]["text"]
        == ("evening sunset scenery blue sky nature, glass bottle with a galaxy in it")
    )
    redux = convert("flux_redux_model_example")
    assert (redux["30"]["width"], redux["30"]["height"]) == (1024, 1024)
    krea = convert("flux1_krea_dev")  # a subgraph instance's promoted inputs
    assert (krea["53:31"]["seed"], krea["53:31"]["steps"]) == (277251746703202, 20)
    assert (krea["53:27"]["width"], krea["53:27"]["height"]) == (1024, 1024)
    assert krea["53:45"]["text"].startswith("Highly realistic portrait of a Nordic woman")
    fill = convert("flux_fill_inpaint_example")  # a promoted prompt saved as null
    assert fill["47:23"]["text"] == (
        "anime girl with massive fennec ears blonde hair blue eyes wearing a pink shirt"
    )
    assert fill["47:3"]["seed"] == 656821733471329
    one_reward = convert("image_flux.1_fill_dev_OneReward")
    pad = one_reward["110:75"]
    assert [pad[k] for k in ("left", "top", "right", "bottom", "feathering")] == [
        40,
        0,
        104,
        104,
        40,
    ]
    assert one_reward["110:74"]["text"] == ""
    assert one_reward["110:58"]["seed"] == 325184035774450  # no saved proxy value: the inner one
    assert one_reward["108:23"]["text"] == "Remove the girl's hat\n"
