"""RebatchImages and RebatchLatents: list-in, list-out regrouping of batches."""

from __future__ import annotations

import torch
from loom_builtin_harness import builtin_registry, make_ctx, run_one

from loom.executor.executor import Executor
from loom.nodes.object_info import to_json
from loom.plugins import PluginHost
from loom.runtime import Runtime
from loom.settings import Settings


def numbered(count: int, start: int = 0) -> torch.Tensor:
    return torch.arange(start, start + count, dtype=torch.float32).reshape(count, 1, 1, 1)


def test_rebatch_images_regroups_every_frame(tmp_path):
    ctx = make_ctx(tmp_path)
    out = run_one("RebatchImages", ctx, images=[numbered(3), numbered(2, 3)], batch_size=[2])
    assert [batch.flatten().tolist() for batch in out] == [[0, 1], [2, 3], [4]]


def test_rebatch_latents_splits_joins_and_numbers_noise_streams(tmp_path):
    ctx = make_ctx(tmp_path)
    latents = [
        {"samples": torch.zeros(3, 4, 2, 2)},
        {"samples": torch.ones(2, 4, 2, 2), "batch_index": [10, 11]},
        {"samples": torch.zeros(1, 4, 3, 3)},  # another size: starts a new batch
    ]
    out = run_one("RebatchLatents", ctx, latents=latents, batch_size=[2])
    assert [item["samples"].shape[0] for item in out] == [2, 2, 1, 1]
    assert [item["batch_index"] for item in out] == [[0, 1], [2, 10], [11], [5]]
    assert torch.equal(out[1]["samples"][1], torch.ones(4, 2, 2))
    assert out[3]["samples"].shape == (1, 4, 3, 3)
    assert all("noise_mask" not in item for item in out)  # all-ones masks are dropped


def test_rebatch_latents_keeps_real_noise_masks(tmp_path):
    ctx = make_ctx(tmp_path)
    mask = torch.zeros(1, 1, 16, 16)
    latents = [{"samples": torch.zeros(3, 4, 2, 2), "noise_mask": mask}]
    out = run_one("RebatchLatents", ctx, latents=latents, batch_size=[2])
    assert [item["noise_mask"].shape for item in out] == [(2, 1, 16, 16), (1, 1, 16, 16)]


def test_rebatch_images_runs_downstream_once_per_batch(tmp_path):
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 4, "height": 4, "batch_size": 3, "color": 0},
        },
        "2": {"class_type": "RebatchImages", "inputs": {"images": ["1", 0], "batch_size": 2}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "rb"}},
    }
    runtime = Runtime(
        Settings(base_directory=tmp_path, load_custom_nodes=False), PluginHost(entry_points=False)
    )
    result = Executor(runtime).run_prompt(prompt, prompt_id="p")
    assert result.status_str == "success"
    names = [image["filename"] for image in result.outputs["3"]["images"]]
    assert len(names) == 3 and sorted((tmp_path / "output").iterdir())[0].name == "rb_00001_.png"


def test_object_info_matches_comfyui_schemas():
    registry = builtin_registry()
    images = to_json(registry.get_node("RebatchImages"), registry)
    assert images["input"]["required"] == {
        "images": ["IMAGE", {}],
        "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}],
    }
    assert images["output_is_list"] == [True] and images["category"] == "image/batch"
    assert images["display_name"] == "Rebatch Images"
    latents = to_json(registry.get_node("RebatchLatents"), registry)
    assert latents["input_order"]["required"] == ["latents", "batch_size"]
    assert latents["output"] == ["LATENT"] and latents["output_is_list"] == [True]
    assert latents["category"] == "latent/batch"
    assert latents["python_module"] == "comfy_extras.nodes_rebatch"
