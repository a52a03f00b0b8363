"""A GLIGEN file (SD1.x's) used with an SDXL checkpoint: a clear error naming the node, its
inputs and both files, before anything is sampled."""

from __future__ import annotations

import copy

from loom_sd15.tiny import gligen_state, tiny_spec

from loom.memory import write_safetensors
from loom.testing import txt2img_prompt


def _prompt() -> dict:
    prompt = txt2img_prompt(
        "sdxl.safetensors",
        positive="a cat",
        negative="",
        seed=1,
        steps=1,
        cfg=7.0,
        output="PreviewImage",
    )
    prompt["20"] = {
        "class_type": "GLIGENLoader",
        "inputs": {"gligen_name": "gligen-sd1.safetensors"},
    }
    prompt["21"] = {
        "class_type": "GLIGENTextBoxApply",
        "inputs": {
            "conditioning_to": ["6", 0],
            "clip": ["4", 1],
            "gligen_textbox_model": ["20", 0],
            "text": "cat",
            "width": 32,
            "height": 32,
            "x": 0,
            "y": 0,
        },
    }
    prompt["3"]["inputs"]["positive"] = ["21", 0]
    return prompt


def test_gligen_with_an_sdxl_checkpoint_is_refused(runtime, base_dir):
    from loom.executor.executor import Executor

    folder = base_dir / "models" / "gligen"
    folder.mkdir(parents=True)
    write_safetensors(folder / "gligen-sd1.safetensors", gligen_state(tiny_spec().unet, 32))
    executor = Executor(runtime)
    validated = executor.validate(copy.deepcopy(_prompt()))
    result = executor.execute("test", validated.prompt, validated.outputs, {})
    assert result.error is not None
    message = result.error["exception_message"]
    print(message)
    assert "GLIGENTextBoxApply" in message and "'clip'" in message
    assert "gligen-sd1.safetensors" in message and "sdxl.safetensors" in message
    assert "SD1.x" in message
