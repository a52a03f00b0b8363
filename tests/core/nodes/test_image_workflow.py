"""A prompt through the real executor chaining the mask, compositing, transform and string nodes."""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage

import loom
from loom.executor.executor import Executor
from loom.plugins import PluginHost
from loom.runtime import Runtime
from loom.settings import Settings
from loom.types import Latent

PROMPT = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
    },
    "2": {
        "class_type": "EmptyImage",
        "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0xFFFFFF},
    },
    "3": {"class_type": "SolidMask", "inputs": {"value": 0.6, "width": 4, "height": 4}},
    "4": {"class_type": "ThresholdMask", "inputs": {"mask": ["3", 0], "value": 0.5}},
    "5": {
        "class_type": "ImageCompositeMasked",
        "inputs": {
            "destination": ["1", 0],
            "source": ["2", 0],
            "x": 0,
            "y": 2,
            "resize_source": False,
            "mask": ["4", 0],
        },
    },
    "6": {
        "class_type": "ImageFlip",
        "inputs": {"image": ["5", 0], "flip_method": "y-axis: horizontally"},
    },
    "7": {"class_type": "ImageRotate", "inputs": {"image": ["6", 0], "rotation": "90 degrees"}},
    "8": {
        "class_type": "StringConcatenate",
        "inputs": {"string_a": "loom", "string_b": "flow", "delimiter": "_"},
    },
    "9": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": ["8", 0]}},
    "10": {"class_type": "MaskPreview", "inputs": {"mask": ["4", 0]}},
}


def test_composite_flip_rotate_and_a_string_prefix_through_the_executor(tmp_path):
    settings = Settings(base_directory=tmp_path, load_custom_nodes=False)
    runtime = Runtime(settings, PluginHost(entry_points=False))
    result = Executor(runtime).run_prompt(PROMPT, prompt_id="p1")
    assert result.status_str == "success" and set(result.outputs) == {"9", "10"}
    (saved,) = result.outputs["9"]["images"]
    assert saved["filename"] == "loom_flow_00001_.png"
    pixels = np.array(PILImage.open(tmp_path / "output" / saved["filename"]))
    # white square pasted at rows 2-5, cols 0-3; mirrored to cols 4-7; turned clockwise:
    # new[r][c] = old[7 - c][r] -> rows 4-7, cols 2-5
    expected = np.zeros((8, 8), dtype=np.uint8)
    expected[4:8, 2:6] = 255
    assert (pixels[..., 0] == expected).all() and (pixels[..., 2] == expected).all()
    (preview,) = result.outputs["10"]["images"]
    assert preview["type"] == "temp"
    mask_png = np.array(PILImage.open(tmp_path / "temp" / preview["filename"]))
    assert mask_png.shape == (4, 4, 3) and (mask_png == 255).all()


def test_mixing_latents_of_different_families_names_node_and_inputs(tmp_path):
    prompt = {
        "1": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1},
        },
        "3": {"class_type": "ZeroPad16", "inputs": {"samples": ["1", 0]}},
        "4": {"class_type": "LatentAdd", "inputs": {"samples1": ["1", 0], "samples2": ["3", 0]}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}},
    }
    settings = Settings(base_directory=tmp_path, load_custom_nodes=False)
    host = PluginHost(entry_points=False)
    host.register(SixteenChannels(), "sixteen")
    result = Executor(Runtime(settings, host)).run_prompt(prompt, prompt_id="p2")
    assert result.status_str == "error"
    assert result.error["node_id"] == "4" and result.error["node_type"] == "LatentAdd"
    assert result.error["exception_message"] == (
        "LatentAdd: samples1 has 4 latent channels but samples2 has 16; "
        "both must come from the same model family"
    )


@loom.node("ZeroPad16", category="test")
class ZeroPad16:
    samples: Latent

    def run(self, ctx: loom.RunContext) -> Latent:
        import torch

        latent = self.samples["samples"]
        return {"samples": torch.zeros(latent.shape[0], 16, *latent.shape[2:])}


class SixteenChannels:
    @loom.hookimpl
    def register_nodes(self, register):
        register(ZeroPad16)
