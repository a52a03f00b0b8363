"""ControlNets in a full txt2img through the real executor: the tiny SD1.5 checkpoint, tiny
ControlNet files, a hint image from LoadImage. Deterministic; the ControlNet changes the
image; a timestep range, strength 0, chaining and the old apply node behave as ComfyUI's."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from loom.testing import txt2img_prompt

SIZE = 32


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from loom_sd15.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-sd15.safetensors", seed=0)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tiny_checkpoint, demo_tokenizers) -> Path:
    from loom_controlnet.tiny import control_lora_state, write_tiny_controlnet
    from loom_sd15.tiny import tiny_spec

    from loom.memory import write_safetensors

    tmp_path = tmp_path_factory.mktemp("base")
    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    try:
        os.link(tiny_checkpoint, checkpoints / "tiny.safetensors")
    except OSError:
        shutil.copy(tiny_checkpoint, checkpoints / "tiny.safetensors")
    controlnet = tmp_path / "models" / "controlnet"
    controlnet.mkdir(parents=True)
    unet = tiny_spec().unet
    write_tiny_controlnet(controlnet / "a.safetensors", unet, seed=1)
    write_tiny_controlnet(controlnet / "b_diffusers.safetensors", unet, seed=2, layout="diffusers")
    write_safetensors(controlnet / "lora.safetensors", control_lora_state(unet))
    (tmp_path / "models" / "loras").mkdir()
    (tmp_path / "models" / "loras" / "not_a_controlnet.safetensors").write_bytes(b"")
    inputs = tmp_path / "input"
    inputs.mkdir()
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, size=(48, 40, 3), dtype=np.uint8)  # not the latent's size
    Image.fromarray(pixels).save(inputs / "hint.png")
    (tmp_path / "extra_model_paths.yaml").write_text(
        f"shared:\n  tokenizers: {demo_tokenizers}\n", encoding="utf-8"
    )
    return tmp_path


def make_executor(base_dir, **settings):
    from loom.executor.executor import Executor
    from loom.settings import Settings
    from loom.testing import make_runtime

    runtime = make_runtime(
        "sd15",
        "samplers",
        "controlnet",
        settings=Settings(
            base_directory=base_dir,
            load_custom_nodes=False,
            cpu_only=True,
            extra_model_paths=[base_dir / "extra_model_paths.yaml"],
            **settings,
        ),
    )
    return Executor(runtime)


@pytest.fixture(scope="module")
def executor(base_dir):
    return make_executor(base_dir)


def txt2img(*controls: dict, old: tuple[str, float] | None = None) -> dict:
    """``controls``: ControlNetApplyAdvanced inputs (``name`` + widgets), chained in order;
    ``old``: one ControlNetApply (file, strength) on the positive first."""
    prompt = txt2img_prompt(
        "tiny.safetensors",
        positive="a glass bottle",
        negative="watermark",
        width=SIZE,
        height=SIZE,
        steps=3,
        cfg=6.0,
    )
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "hint.png"}}
    positive, negative = ["6", 0], ["7", 0]
    if old is not None:
        prompt["29"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": old[0]}}
        prompt["30"] = {
            "class_type": "ControlNetApply",
            "inputs": {
                "conditioning": positive,
                "control_net": ["29", 0],
                "image": ["10", 0],
                "strength": old[1],
            },
        }
        positive = ["30", 0]
    for index, control in enumerate(controls):
        loader, apply = str(40 + 2 * index), str(41 + 2 * index)
        prompt[loader] = {
            "class_type": "ControlNetLoader",
            "inputs": {"control_net_name": control["name"]},
        }
        widgets = {k: v for k, v in control.items() if k != "name"}
        prompt[apply] = {
            "class_type": "ControlNetApplyAdvanced",
            "inputs": {
                "positive": positive,
                "negative": negative,
                "control_net": [loader, 0],
                "image": ["10", 0],
                "strength": 1.0,
                "start_percent": 0.0,
                "end_percent": 1.0,
                **widgets,
            },
        }
        positive, negative = [apply, 0], [apply, 1]
    prompt["3"]["inputs"]["positive"] = positive
    prompt["3"]["inputs"]["negative"] = negative
    return prompt


def run(executor, prompt: dict):
    validated = executor.validate(copy.deepcopy(prompt))
    return executor.execute("test", validated.prompt, validated.outputs, {})


_IMAGES: dict[str, torch.Tensor] = {}


def rendered(executor, prompt: dict) -> torch.Tensor:
    result = run(executor, prompt)
    assert result.error is None, result.error.get("exception_message")
    return result.values["8"][0][0]


def image(executor, *controls: dict, **kwargs) -> torch.Tensor:
    """The decoded image of :func:`txt2img` (each prompt rendered once per module)."""
    prompt = txt2img(*controls, **kwargs)
    key = repr(prompt)
    if key not in _IMAGES:
        _IMAGES[key] = rendered(executor, prompt)
    return _IMAGES[key]


def rerun(executor, *controls: dict) -> torch.Tensor:
    """The same prompt again on another executor (nothing cached; models already loaded)."""
    from loom.executor.executor import Executor

    return rendered(Executor(executor.runtime), txt2img(*controls))


def differ(a: torch.Tensor, b: torch.Tensor) -> bool:
    return float((a - b).abs().max()) > 1e-3


A = {"name": "a.safetensors"}
B = {"name": "b_diffusers.safetensors"}
LORA = {"name": "lora.safetensors"}
#: Less than the tiny UNet beside its activations: models are evicted and streamed.
BUDGET = 5 * 2**20


def test_controlnet_changes_the_image_deterministically(executor):
    base = image(executor)
    controlled = image(executor, A)
    assert differ(base, controlled)
    assert torch.equal(controlled, rerun(executor, A))  # uncached rerun: same bits
    assert torch.equal(base, image(executor, {**A, "strength": 0.0}))
    assert differ(controlled, image(executor, {**A, "strength": 0.5}))


def test_timestep_range(executor):
    base = image(executor)
    full = image(executor, A)
    # a range covering no step leaves the image as without the ControlNet
    assert torch.equal(base, image(executor, {**A, "start_percent": 0.0, "end_percent": 0.0}))
    late = image(executor, {**A, "start_percent": 0.5, "end_percent": 1.0})
    early = image(executor, {**A, "start_percent": 0.0, "end_percent": 0.5})
    assert differ(late, base) and differ(late, full)
    assert differ(early, base) and differ(early, late)


def test_two_chained_controlnets(executor):
    a, b = image(executor, A), image(executor, B)
    both = image(executor, A, B)
    assert differ(both, a) and differ(both, b) and differ(a, b)
    assert torch.equal(both, rerun(executor, A, B))


def test_old_apply_node_also_controls_the_negative(executor):
    old = image(executor, old=("a.safetensors", 1.0))
    advanced = image(executor, A)
    assert differ(old, image(executor))
    # ControlNetApply marks its signal for the uncond too; the advanced node gives both
    # prompts the same signal: same guidance, same image
    assert torch.allclose(old, advanced, atol=1e-5)


@pytest.mark.parametrize("control", [A, LORA], ids=["controlnet", "control-lora"])
def test_control_models_load_through_the_memory_manager_under_a_budget(executor, base_dir, control):
    """With ``--vram-budget`` on the CPU (a simulated device), a ControlNet's and a
    control-LoRA's network are handles the manager loads with the UNet and evicts for the
    VAE, and the image is the unbudgeted one."""
    budgeted = make_executor(base_dir, vram_budget_bytes=BUDGET)
    memory = budgeted.runtime.memory
    loads: list[list[str]] = []
    load = memory.load

    def spy(handles, extra_memory=0):
        handles = list(handles)
        loads.append([h.name for h in handles])
        load(handles, extra_memory)

    memory.load = spy
    got = rendered(budgeted, txt2img(control))
    name = ("control-lora:" if control is LORA else "controlnet:") + control["name"]
    assert ["sd15-unet:tiny.safetensors", name] in loads
    assert name in [e.name for e in memory.evictions]  # made room for the VAE
    want = image(executor, control)
    assert differ(want, image(executor))
    # not bitwise: the small budget also splits cond and uncond into batches of one
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
