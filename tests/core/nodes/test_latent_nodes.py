"""Built-in latent nodes, run through the real registry."""

from __future__ import annotations

import pytest
import torch
from loom_builtin_harness import builtin_registry, make_ctx, run_one

from loom.nodes.object_info import to_json
from loom.resample import bislerp


@pytest.fixture
def ctx(tmp_path):
    return make_ctx(tmp_path)


def latent(batch: int = 1, channels: int = 4, height: int = 8, width: int = 8, **extra) -> dict:
    torch.manual_seed(0)
    return {"samples": torch.randn(batch, channels, height, width), **extra}


def test_empty_latent_image(ctx):
    out = run_one("EmptyLatentImage", ctx, width=64, height=40, batch_size=2)
    assert set(out) == {"samples"}
    assert out["samples"].shape == (2, 4, 5, 8) and out["samples"].dtype == torch.float32
    assert out["samples"].device.type == "cpu" and torch.count_nonzero(out["samples"]) == 0


def test_object_info_empty_latent_image():
    registry = builtin_registry()
    info = to_json(registry.get_node("EmptyLatentImage"), registry)
    assert info["input"]["required"]["width"] == [
        "INT",
        {
            "default": 512,
            "min": 16,
            "max": 16384,
            "step": 8,
            "tooltip": "The width of the latent images in pixels.",
        },
    ]
    assert info["output_tooltips"] == ["The empty latent image batch."]
    assert info["display_name"] == "Empty Latent Image" and info["category"] == "latent"
    assert (
        info["description"]
        == "Create a new batch of empty latent images to be denoised via sampling."
    )


def test_latent_upscale_sizes(ctx):
    source = latent(height=8, width=16, batch_index=[3])
    out = run_one(
        "LatentUpscale",
        ctx,
        samples=source,
        upscale_method="bilinear",
        width=0,
        height=128,
        crop="disabled",
    )
    assert out["samples"].shape == (1, 4, 16, 32) and out["batch_index"] == [3]
    small = run_one(
        "LatentUpscale",
        ctx,
        samples=source,
        upscale_method="nearest-exact",
        width=8,
        height=8,
        crop="disabled",
    )
    assert small["samples"].shape == (1, 4, 8, 8)  # clamped to 64 pixels
    cropped = run_one(
        "LatentUpscale",
        ctx,
        samples=source,
        upscale_method="nearest-exact",
        width=64,
        height=64,
        crop="center",
    )
    assert torch.equal(cropped["samples"], source["samples"][:, :, :, 4:12])


@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"])
def test_latent_upscale_by_every_method(ctx, method):
    out = run_one(
        "LatentUpscaleBy", ctx, samples=latent(batch=2), upscale_method=method, scale_by=1.5
    )
    assert out["samples"].shape == (2, 4, 12, 12)
    assert torch.isfinite(out["samples"]).all()


def test_bislerp_keeps_constant_and_interpolates_norms():
    constant = torch.ones(1, 4, 3, 3)
    assert torch.allclose(bislerp(constant, 6, 6), torch.ones(1, 4, 6, 6))
    # Two orthogonal vectors: the midpoint is on the arc, with the mean norm.
    pair = torch.zeros(1, 2, 1, 2)
    pair[0, 0, 0, 0] = 1.0
    pair[0, 1, 0, 1] = 3.0
    mid = bislerp(pair, 3, 1)[0, :, 0, 1]
    assert torch.allclose(mid.norm(), torch.tensor(2.0), atol=1e-5)
    assert torch.allclose(mid[0], mid[1], atol=1e-5)


def test_latent_composite_hard_and_feathered(ctx):
    target = {"samples": torch.zeros(1, 1, 6, 6), "batch_index": [5]}
    source = {"samples": torch.ones(1, 1, 3, 3)}
    hard = run_one(
        "LatentComposite", ctx, samples_to=target, samples_from=source, x=8, y=8, feather=0
    )
    expected = torch.zeros(6, 6)
    expected[1:4, 1:4] = 1
    assert torch.equal(hard["samples"][0, 0], expected) and hard["batch_index"] == [5]
    soft = run_one(
        "LatentComposite", ctx, samples_to=target, samples_from=source, x=8, y=8, feather=16
    )
    ring = torch.tensor([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
    assert torch.allclose(soft["samples"][0, 0, 1:4, 1:4], ring)
    assert torch.count_nonzero(target["samples"]) == 0  # input untouched


def test_latent_composite_clips_at_the_edge(ctx):
    out = run_one(
        "LatentComposite",
        ctx,
        samples_to={"samples": torch.zeros(1, 1, 4, 4)},
        samples_from={"samples": torch.ones(1, 1, 4, 4)},
        x=16,
        y=24,
        feather=0,
    )
    assert out["samples"][0, 0].sum() == 2  # only rows 3, cols 2..3 overlap


def test_latent_from_batch_slices_samples_masks_and_indices(ctx):
    source = latent(batch=4, noise_mask=torch.arange(2.0).reshape(2, 1, 1, 1).expand(2, 1, 8, 8))
    out = run_one("LatentFromBatch", ctx, samples=source, batch_index=1, length=2)
    assert torch.equal(out["samples"], source["samples"][1:3])
    assert out["batch_index"] == [1, 2]
    assert out["noise_mask"][:, 0, 0, 0].tolist() == [1.0, 0.0]  # masks tile to the batch first
    clamped = run_one(
        "LatentFromBatch",
        ctx,
        samples={**source, "batch_index": [10, 11, 12, 13]},
        batch_index=9,
        length=5,
    )
    assert clamped["samples"].shape[0] == 1 and clamped["batch_index"] == [13]


def test_repeat_latent_batch_offsets_batch_index(ctx):
    source = latent(batch=2, batch_index=[3, 4], noise_mask=torch.rand(2, 1, 8, 8))
    out = run_one("RepeatLatentBatch", ctx, samples=source, amount=3)
    assert out["samples"].shape == (6, 4, 8, 8)
    assert torch.equal(out["samples"][4:], source["samples"])
    assert out["batch_index"] == [3, 4, 5, 6, 7, 8]
    assert out["noise_mask"].shape == (6, 1, 8, 8)
    plain = run_one("RepeatLatentBatch", ctx, samples=latent(), amount=2)
    assert "batch_index" not in plain


def test_set_latent_noise_mask_reshapes(ctx):
    out = run_one("SetLatentNoiseMask", ctx, samples=latent(), mask=torch.ones(8, 8))
    assert out["noise_mask"].shape == (1, 1, 8, 8)
    assert "noise_mask" not in latent()
