"""Latent arithmetic and transforms, against hand-computed tensors."""

from __future__ import annotations

import pytest
import torch
from loom_builtin_harness import make_ctx, object_info_of, run_one


@pytest.fixture
def ctx(tmp_path):
    return make_ctx(tmp_path)


def latent(values, **extra) -> dict:
    return {"samples": torch.as_tensor(values, dtype=torch.float32), **extra}


def test_add_subtract_multiply_keep_the_first_latents_keys(ctx):
    a = latent(torch.full((2, 4, 2, 2), 3.0), noise_mask=torch.ones(1, 1, 2, 2))
    b = latent(torch.full((1, 4, 2, 2), 1.0))  # batch 1 tiles to 2
    added = run_one("LatentAdd", ctx, samples1=a, samples2=b)
    assert torch.equal(added["samples"], torch.full((2, 4, 2, 2), 4.0))
    assert added["noise_mask"] is a["noise_mask"]
    subtracted = run_one("LatentSubtract", ctx, samples1=a, samples2=b)
    assert torch.equal(subtracted["samples"], torch.full((2, 4, 2, 2), 2.0))
    scaled = run_one("LatentMultiply", ctx, samples=a, multiplier=-0.5)
    assert torch.equal(scaled["samples"], torch.full((2, 4, 2, 2), -1.5))
    assert torch.equal(a["samples"], torch.full((2, 4, 2, 2), 3.0))  # inputs untouched


def test_add_resizes_the_second_latent_bilinearly(ctx):
    a = latent(torch.zeros(1, 4, 4, 4))
    b = latent(torch.full((3, 4, 2, 2), 2.0))  # batch 3 is trimmed to 1
    out = run_one("LatentAdd", ctx, samples1=a, samples2=b)["samples"]
    assert torch.allclose(out, torch.full((1, 4, 4, 4), 2.0))


def test_interpolate_mixes_directions_and_magnitudes_separately(ctx):
    # one pixel, two channels: s1 = (3, 4) |5|, s2 = (0, 2) |2|
    s1 = latent([[[[3.0]], [[4.0]]]])
    s2 = latent([[[[0.0]], [[2.0]]]])
    out = run_one("LatentInterpolate", ctx, samples1=s1, samples2=s2, ratio=0.5)["samples"]
    direction = torch.tensor([0.6 * 0.5, 0.8 * 0.5 + 0.5])
    direction = direction / direction.norm()
    expected = direction * (5 * 0.5 + 2 * 0.5)
    assert torch.allclose(out.flatten(), expected)
    assert torch.allclose(
        run_one("LatentInterpolate", ctx, samples1=s1, samples2=s2, ratio=1.0)["samples"],
        s1["samples"],
    )


def test_interpolate_handles_batches_per_item(ctx):
    s1 = latent(torch.tensor([[3.0, 4.0], [0.0, 1.0]]).reshape(2, 2, 1, 1))
    s2 = latent(torch.tensor([[0.0, 2.0], [5.0, 0.0]]).reshape(2, 2, 1, 1))
    out = run_one("LatentInterpolate", ctx, samples1=s1, samples2=s2, ratio=0.0)["samples"]
    assert torch.allclose(out, s2["samples"])


def test_interpolate_zero_vectors_stay_zero(ctx):
    zeros = latent(torch.zeros(1, 4, 2, 2))
    out = run_one("LatentInterpolate", ctx, samples1=zeros, samples2=zeros, ratio=0.3)
    assert torch.equal(out["samples"], torch.zeros(1, 4, 2, 2))


def test_latent_batch_concatenates_and_numbers_the_noise_streams(ctx):
    a = latent(torch.zeros(2, 4, 2, 2))
    b = latent(torch.ones(1, 4, 4, 4), batch_index=[7])
    out = run_one("LatentBatch", ctx, samples1=a, samples2=b)
    assert out["samples"].shape == (3, 4, 2, 2)
    assert torch.allclose(out["samples"][2], torch.ones(4, 2, 2))
    assert out["batch_index"] == [0, 1, 7]


def test_latent_blend_weights_samples1_by_the_factor(ctx):
    a = latent(torch.full((1, 4, 2, 2), 1.0))
    b = latent(torch.full((1, 4, 2, 2), 3.0))
    out = run_one("LatentBlend", ctx, samples1=a, samples2=b, blend_factor=0.25)
    assert torch.allclose(out["samples"], torch.full((1, 4, 2, 2), 0.25 + 2.25))
    resized = run_one(
        "LatentBlend",
        ctx,
        samples1=a,
        samples2=latent(torch.full((1, 4, 1, 1), 3.0)),
        blend_factor=0.5,
    )
    assert torch.allclose(resized["samples"], torch.full((1, 4, 2, 2), 2.0))


def test_latent_rotate_and_flip(ctx):
    grid = latent(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]).reshape(1, 1, 2, 3))

    def values(node, **inputs):
        return run_one(node, ctx, samples=grid, **inputs)["samples"][0, 0].tolist()

    assert values("LatentRotate", rotation="90 degrees") == [[4, 1], [5, 2], [6, 3]]
    assert values("LatentRotate", rotation="270 degrees") == [[3, 6], [2, 5], [1, 4]]
    assert values("LatentRotate", rotation="none") == [[1, 2, 3], [4, 5, 6]]
    assert values("LatentFlip", flip_method="x-axis: vertically") == [[4, 5, 6], [1, 2, 3]]
    assert values("LatentFlip", flip_method="y-axis: horizontally") == [[3, 2, 1], [6, 5, 4]]


def test_latent_crop_in_pixels_keeps_the_origin_8_latent_pixels_inside(ctx):
    samples = torch.arange(16 * 16, dtype=torch.float32).reshape(1, 1, 16, 16)
    out = run_one("LatentCrop", ctx, samples=latent(samples), width=64, height=32, x=16, y=8)
    assert torch.equal(out["samples"], samples[:, :, 1:5, 2:10])
    clamped = run_one(
        "LatentCrop", ctx, samples=latent(samples), width=512, height=512, x=512, y=512
    )
    assert torch.equal(clamped["samples"], samples[:, :, 8:, 8:])


def test_object_info_matches_comfyui_schemas():
    add = object_info_of("LatentAdd")
    assert add["input_order"] == {"required": ["samples1", "samples2"]}
    assert add["category"] == "latent/advanced"
    assert add["python_module"] == "comfy_extras.nodes_latent"
    assert object_info_of("LatentMultiply")["input"]["required"]["multiplier"] == [
        "FLOAT",
        {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01},
    ]
    assert object_info_of("LatentInterpolate")["input"]["required"]["ratio"] == [
        "FLOAT",
        {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01},
    ]
    batch = object_info_of("LatentBatch")
    assert batch["deprecated"] is True and batch["category"] == "latent/batch"
    blend = object_info_of("LatentBlend")
    assert blend["category"] == "_for_testing" and blend["display_name"] == "Latent Blend"
    assert blend["python_module"] == "nodes"
    rotate = object_info_of("LatentRotate")
    assert rotate["display_name"] == "Rotate Latent" and rotate["category"] == "latent/transform"
    assert object_info_of("LatentFlip")["display_name"] == "Flip Latent"
    crop = object_info_of("LatentCrop")
    assert crop["input_order"]["required"] == ["samples", "width", "height", "x", "y"]
    assert crop["input"]["required"]["width"] == [
        "INT",
        {"default": 512, "min": 64, "max": 16384, "step": 8},
    ]
    strength = object_info_of("ConditioningSetAreaStrength")
    assert strength["input"]["required"] == {
        "conditioning": ["CONDITIONING"],
        "strength": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}],
    }
    assert strength["category"] == "conditioning" and strength["python_module"] == "nodes"


def test_conditioning_set_area_strength_copies_options(ctx):
    embedding = torch.zeros(1, 2, 3)
    conditioning = [[embedding, {"area": (8, 8, 0, 0), "strength": 1.0}]]
    out = run_one("ConditioningSetAreaStrength", ctx, conditioning=conditioning, strength=2.5)
    assert out[0][0] is embedding and out[0][1] == {"area": (8, 8, 0, 0), "strength": 2.5}
    assert conditioning[0][1]["strength"] == 1.0
