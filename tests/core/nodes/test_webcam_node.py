"""WebcamCapture: the frame the frontend uploaded, loaded like LoadImage; a fresh capture
per queue re-runs it (a NaN fingerprint matches nothing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from loom_builtin_harness import object_info_of
from PIL import Image as PILImage

from loom.errors import PromptValidationError
from loom.executor.executor import Executor
from loom.plugins import PluginHost
from loom.runtime import Runtime
from loom.settings import Settings


def test_object_info_is_comfyuis():
    info = object_info_of("WebcamCapture")
    size = {"default": 0, "min": 0, "max": 16384, "step": 1}
    assert info["input"] == {
        "required": {
            "image": ["WEBCAM", {}],
            "width": ["INT", size],
            "height": ["INT", size],
            "capture_on_queue": ["BOOLEAN", {"default": True}],
        }
    }
    assert (info["output"], info["display_name"], info["python_module"], info["category"]) == (
        ["IMAGE"],
        "Webcam Capture",
        "comfy_extras.nodes_webcam",
        "image",
    )


def _cached(result) -> list[str]:
    return next(data["nodes"] for kind, data in result.messages if kind == "execution_cached")


@pytest.mark.parametrize("on_queue", [True, False])
def test_loads_the_capture_and_reruns_only_when_capturing_on_queue(tmp_path, on_queue):
    pixels = np.random.default_rng(0).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    (tmp_path / "input" / "webcam").mkdir(parents=True)
    PILImage.fromarray(pixels).save(tmp_path / "input" / "webcam" / "shot.png")
    executor = Executor(
        Runtime(
            Settings(base_directory=tmp_path, load_custom_nodes=False),
            PluginHost(entry_points=False),
        )
    )
    prompt = {
        "1": {
            "class_type": "WebcamCapture",
            "inputs": {
                "image": "webcam/shot.png",
                "width": 0,
                "height": 0,
                "capture_on_queue": on_queue,
            },
        },
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    first = executor.run_prompt(prompt, prompt_id="a")
    assert first.status_str == "success", first.messages
    ((image,),) = first.values["1"]
    torch.testing.assert_close(image, torch.from_numpy(pixels.astype(np.float32) / 255.0)[None])
    again = executor.run_prompt(prompt, prompt_id="b")
    assert ("1" in _cached(again)) is not on_queue

    prompt["1"]["inputs"]["image"] = "webcam/missing.png"
    with pytest.raises(PromptValidationError) as info:
        executor.validate(prompt)
    (error,) = info.value.node_errors["1"]["errors"]
    assert error["type"] == "custom_validation_failed"
    assert "Invalid image file: webcam/missing.png" in error["details"]
