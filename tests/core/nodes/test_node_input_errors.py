"""Input a node cannot work with is a NodeInputError naming the node and the inputs, found
by the bad-input sweep (tests/e2e/test_bad_input_execution_sweep.py); ComfyUI 0.8's nodes
raise the tensor library's error there."""

from __future__ import annotations

import pytest
import torch
from loom_builtin_harness import make_ctx, run_one

from loom.errors import LoomError, NodeInputError
from loom.input_checks import check_batches


@pytest.fixture
def ctx(tmp_path):
    return make_ctx(tmp_path)


def test_check_batches_names_each_input_and_lets_the_broadcast_ones_be_one():
    check_batches("N", {"a": torch.zeros(3, 2), "b": torch.zeros(1, 2)}, broadcast=("b",))
    with pytest.raises(NodeInputError):  # only b may be 1
        check_batches("N", {"a": torch.zeros(1, 2), "b": torch.zeros(3, 2)}, broadcast=("b",))
    check_batches("N", {"a": torch.zeros(1, 2), "b": torch.zeros(3, 2)}, broadcast=("a",))
    with pytest.raises(NodeInputError) as info:
        check_batches("N", {"a": torch.zeros(2, 2), "b": torch.zeros(3, 2)}, broadcast=("a",))
    assert str(info.value).startswith(
        "N: inputs a and b must have the same batch size (or 1 for a), but a has 2, b has 3"
    )
    assert info.value.inputs == ("a", "b")
    assert isinstance(info.value, LoomError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("class_type", "inputs", "names"),
    [
        ("ImageBlend", {"image1": (2, 4, 4, 3), "image2": (3, 4, 4, 3)}, "image1 and image2"),
        (
            "MaskComposite",
            {"destination": (2, 4, 4), "source": (3, 4, 4)},
            "destination and source",
        ),
    ],
)
def test_batches_that_cannot_broadcast_name_both_inputs(ctx, class_type, inputs, names):
    tensors = {name: torch.rand(shape) for name, shape in inputs.items()}
    extra = {"ImageBlend": {"blend_factor": 0.5, "blend_mode": "normal"}}.get(
        class_type, {"x": 0, "y": 0, "operation": "add"}
    )
    with pytest.raises(NodeInputError, match=f"{class_type}: inputs {names} must have the same"):
        run_one(class_type, ctx, **tensors, **extra)


def test_a_batch_of_one_still_broadcasts(ctx):
    out = run_one(
        "ImageBlend",
        ctx,
        image1=torch.zeros(1, 4, 4, 3),
        image2=torch.ones(3, 4, 4, 3),
        blend_factor=1.0,
        blend_mode="normal",
    )
    assert out.shape == (3, 4, 4, 3)
    mask = run_one(
        "MaskComposite",
        ctx,
        destination=torch.zeros(2, 4, 4),
        source=torch.ones(1, 4, 4),
        x=0,
        y=0,
        operation="add",
    )
    assert torch.equal(mask, torch.ones(2, 4, 4))


@pytest.mark.parametrize("class_type", ["LatentBlend", "LatentComposite"])
def test_latent_batches_that_cannot_broadcast(ctx, class_type):
    first, second = (
        ("samples1", "samples2") if class_type == "LatentBlend" else ("samples_to", "samples_from")
    )
    widgets = (
        {"blend_factor": 0.5} if class_type == "LatentBlend" else {"x": 0, "y": 0, "feather": 0}
    )
    with pytest.raises(NodeInputError, match=f"{class_type}: inputs {first} and {second}"):
        run_one(
            class_type,
            ctx,
            **{
                first: {"samples": torch.zeros(2, 4, 3, 3)},
                second: {"samples": torch.zeros(3, 4, 3, 3)},
            },
            **widgets,
        )


@pytest.mark.parametrize(
    ("class_type", "radius_name"),
    [("ImageBlur", "blur_radius"), ("ImageSharpen", "sharpen_radius")],
)
def test_a_filter_wider_than_the_image_names_radius_and_size(ctx, class_type, radius_name):
    extra = {"sigma": 1.0} if class_type == "ImageBlur" else {"sigma": 1.0, "alpha": 1.0}
    with pytest.raises(NodeInputError) as info:
        run_one(class_type, ctx, image=torch.rand(1, 9, 7, 3), **{radius_name: 7}, **extra)
    assert str(info.value) == (
        f"{class_type}: {radius_name} 7 needs the image to be larger than 7 pixels on each side, "
        f"but it is 7x9\nhint: lower {radius_name} to at most 6"
    )
    out = run_one(class_type, ctx, image=torch.rand(1, 9, 7, 3), **{radius_name: 6}, **extra)
    assert out.shape == (1, 9, 7, 3)


def test_canny_on_an_image_smaller_than_its_blur(ctx):
    with pytest.raises(NodeInputError, match=r"Canny: image must be at least 3x3 pixels.* 2x1"):
        run_one("Canny", ctx, image=torch.rand(1, 1, 2, 3), low_threshold=0.4, high_threshold=0.8)
    out = run_one("Canny", ctx, image=torch.rand(1, 3, 3, 3), low_threshold=0.4, high_threshold=0.8)
    assert out.shape == (1, 3, 3, 3)


def test_scaling_to_no_pixels_names_scale_by(ctx):
    with pytest.raises(
        NodeInputError, match=r"ImageScaleBy: scale_by 0.01 on a 7x9 image gives a 0x0"
    ):
        run_one(
            "ImageScaleBy",
            ctx,
            image=torch.rand(1, 9, 7, 3),
            upscale_method="nearest-exact",
            scale_by=0.01,
        )
    with pytest.raises(
        NodeInputError, match=r"LatentUpscaleBy: scale_by 0.05 on a 7x9 latent gives a 0x0"
    ):
        run_one(
            "LatentUpscaleBy",
            ctx,
            samples={"samples": torch.zeros(1, 4, 9, 7)},
            upscale_method="nearest-exact",
            scale_by=0.05,
        )


def test_grow_mask_by_the_declared_maximum_ends_at_its_fixed_point(ctx):
    mask = torch.zeros(1, 9, 7)
    mask[0, 4, 3] = 1.0
    grown = run_one("GrowMask", ctx, mask=mask, expand=16384, tapered_corners=True)
    assert torch.equal(grown, torch.ones(1, 9, 7))
    few = run_one("GrowMask", ctx, mask=mask, expand=1, tapered_corners=True)
    assert few.sum() == 5  # a plus sign: one step still grows by one pixel
    shrunk = run_one("GrowMask", ctx, mask=mask, expand=-16384, tapered_corners=False)
    assert torch.equal(shrunk, torch.zeros(1, 9, 7))


def cond(batch: int, tokens: int, width: int) -> list:
    return [[torch.rand(batch, tokens, width), {}]]


@pytest.mark.parametrize("class_type", ["ConditioningAverage", "ConditioningConcat"])
def test_conditioning_of_another_text_encoder_names_both_inputs(ctx, class_type):
    widgets = {"conditioning_to_strength": 0.5} if class_type == "ConditioningAverage" else {}
    with pytest.raises(NodeInputError) as info:
        run_one(
            class_type,
            ctx,
            conditioning_to=cond(1, 77, 768),
            conditioning_from=cond(1, 77, 2048),
            **widgets,
        )
    assert str(info.value).startswith(
        f"{class_type}: inputs conditioning_to and conditioning_from must have the same width, "
        "but conditioning_to has 768, conditioning_from has 2048"
    )
    with pytest.raises(NodeInputError, match="same batch size"):
        run_one(
            class_type,
            ctx,
            conditioning_to=cond(2, 77, 8),
            conditioning_from=cond(3, 77, 8),
            **widgets,
        )
    with pytest.raises(NodeInputError, match="conditioning_from holds no conditioning"):
        run_one(class_type, ctx, conditioning_to=cond(1, 77, 8), conditioning_from=[], **widgets)


def test_conditioning_average_still_broadcasts_a_batch_of_one(ctx):
    ((mixed, _),) = run_one(
        "ConditioningAverage",
        ctx,
        conditioning_to=cond(1, 77, 8),
        conditioning_from=cond(3, 77, 8),
        conditioning_to_strength=0.5,
    )
    assert mixed.shape == (3, 77, 8)


def test_latent_sharpen_wider_than_the_latent_names_its_radius(ctx):
    operation = run_one("LatentOperationSharpen", ctx, sharpen_radius=9, sigma=1.0, alpha=0.1)
    with pytest.raises(
        NodeInputError, match="LatentOperationSharpen: sharpen_radius 9 needs the latent"
    ):
        run_one(
            "LatentApplyOperation",
            ctx,
            samples={"samples": torch.rand(1, 4, 9, 7)},
            operation=operation,
        )


class BlockVae:
    """Stands in for a VAE: 8-pixel blocks; encoding returns zeros of the latent's shape."""

    downscale_ratio = 8

    def encode(self, pixels):
        return torch.zeros(pixels.shape[0], 4, pixels.shape[1] // 8, pixels.shape[2] // 8)


@pytest.mark.parametrize(
    ("class_type", "extra"),
    [
        ("VAEEncode", {}),
        ("InstructPixToPixConditioning", {"positive": [], "negative": []}),
        (
            "InpaintModelConditioning",
            {"positive": [], "negative": [], "mask": torch.zeros(1, 7, 9), "noise_mask": True},
        ),
    ],
)
def test_an_image_under_one_vae_block_names_pixels(ctx, class_type, extra):
    with pytest.raises(NodeInputError) as info:
        run_one(class_type, ctx, pixels=torch.rand(1, 7, 9, 3), vae=BlockVae(), **extra)
    assert str(info.value) == (
        f"{class_type}: pixels must be at least 8x8 pixels (the VAE encodes 8x8 blocks), "
        "but it is 9x7"
    )


def test_vae_encode_of_one_block_still_encodes(ctx):
    latent = run_one("VAEEncode", ctx, pixels=torch.rand(1, 9, 8, 3), vae=BlockVae())
    assert latent["samples"].shape == (1, 4, 1, 1)


def test_continuous_v_sampling_needs_positive_sigmas(ctx):
    with pytest.raises(NodeInputError, match="ModelSamplingContinuousV: sigma_min must be"):
        run_one(
            "ModelSamplingContinuousV",
            ctx,
            model=None,
            sampling="v_prediction",
            sigma_max=500.0,
            sigma_min=0.0,
        )
