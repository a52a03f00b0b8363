"""PorterDuffImageComposite: every mode on one pixel, computed by hand from the
Porter-Duff formulas; sizes and batches as ComfyUI handles them."""

from __future__ import annotations

import pytest
import torch
from loom_builtin_harness import execute, object_info_of

from loom.nodes.builtin.porter_duff import OPERATORS

# source colour 0.8 at alpha 0.5 (mask 0.5), destination 0.4 at alpha 0.75 (mask 0.25):
# premultiplied S = 0.4, D = 0.3. mode -> (straight colour, output mask)
EXPECTED = {
    "ADD": (0.7, 0.0),  # alpha min(1.25, 1), colour min(0.7, 1)
    "CLEAR": (0.0, 1.0),
    "DARKEN": ((0.25 * 0.4 + 0.5 * 0.3 + 0.3) / 0.875, 0.125),
    "DST": (0.4, 0.25),
    "DST_ATOP": ((0.5 * 0.3 + 0.25 * 0.4) / 0.5, 0.5),
    "DST_IN": (0.4, 0.625),
    "DST_OUT": (0.4, 0.625),
    "DST_OVER": ((0.3 + 0.25 * 0.4) / 0.875, 0.125),
    "LIGHTEN": ((0.25 * 0.4 + 0.5 * 0.3 + 0.4) / 0.875, 0.125),
    "MULTIPLY": (0.12 / 0.375, 0.625),
    "OVERLAY": (2 * 0.4 * 0.3 / 0.875, 0.125),  # 2D = 0.6 < 0.75: the multiply branch
    "SCREEN": ((0.4 + 0.3 - 0.12) / 0.875, 0.125),
    "SRC": (0.8, 0.5),
    "SRC_ATOP": ((0.75 * 0.4 + 0.5 * 0.3) / 0.75, 0.25),
    "SRC_IN": (0.8, 0.625),
    "SRC_OUT": (0.8, 0.875),
    "SRC_OVER": ((0.4 + 0.5 * 0.3) / 0.875, 0.125),
    "XOR": ((0.25 * 0.4 + 0.5 * 0.3) / 0.5, 0.5),
}


def composite(source, source_alpha, destination, destination_alpha, mode):
    return execute(
        "PorterDuffImageComposite",
        None,
        source=source,
        source_alpha=source_alpha,
        destination=destination,
        destination_alpha=destination_alpha,
        mode=mode,
    ).values


@pytest.mark.parametrize("mode", list(EXPECTED))
def test_each_mode_on_one_pixel(mode):
    image, mask = composite(
        torch.full((1, 1, 1, 3), 0.8),
        torch.full((1, 1, 1), 0.5),
        torch.full((1, 1, 1, 3), 0.4),
        torch.full((1, 1, 1), 0.25),
        mode,
    )
    colour, alpha_mask = EXPECTED[mode]
    assert image.shape == (1, 1, 1, 3) and mask.shape == (1, 1, 1)
    assert torch.allclose(image, torch.full((1, 1, 1, 3), colour), atol=1e-6)
    assert mask.item() == pytest.approx(alpha_mask, abs=1e-6)


def test_overlay_screens_where_the_destination_is_bright():
    # S = 0.4 (alpha 0.5), D = 0.72 (0.9 at alpha 0.8): 2D >= da, so sa*da - 2(da - S)(sa - D)
    image, mask = composite(
        torch.full((1, 1, 1, 3), 0.8),
        torch.full((1, 1, 1), 0.5),
        torch.full((1, 1, 1, 3), 0.9),
        torch.full((1, 1, 1), 0.2),
        "OVERLAY",
    )
    alpha = 0.5 + 0.8 - 0.4
    colour = 0.5 * 0.8 - 2 * (0.8 - 0.4) * (0.5 - 0.72)
    assert image[0, 0, 0, 0].item() == pytest.approx(min(colour / alpha, 1.0), abs=1e-6)
    assert mask.item() == pytest.approx(1 - alpha, abs=1e-6)


def test_modes_listed_in_comfyuis_order_with_dst_default():
    info = object_info_of("PorterDuffImageComposite")
    mode = info["input"]["required"]["mode"]
    assert mode[1]["options"] == list(OPERATORS) == list(EXPECTED) and mode[1]["default"] == "DST"
    assert info["input_order"]["required"] == [
        "source",
        "source_alpha",
        "destination",
        "destination_alpha",
        "mode",
    ]
    assert info["output"] == ["IMAGE", "MASK"]
    assert info["display_name"] == "Porter-Duff Image Composite"


def test_source_and_masks_are_fitted_to_the_destination_and_batches_trimmed():
    source = torch.ones(3, 2, 2, 3)  # resized to the destination's 4x4
    destination = torch.zeros(2, 4, 4, 3)
    image, mask = composite(source, torch.zeros(2, 2), destination, torch.ones(2, 4, 4), "SRC_OVER")
    # the [H, W] source mask is one item, so the batch is trimmed to 1
    assert image.shape == (1, 4, 4, 3) and mask.shape == (1, 4, 4)
    assert torch.allclose(image, torch.ones(1, 4, 4, 3)) and torch.allclose(
        mask, torch.zeros(1, 4, 4)
    )


def test_channel_mismatch_names_the_node_and_inputs():
    with pytest.raises(ValueError, match="PorterDuffImageComposite: source has 4 channels"):
        composite(
            torch.ones(1, 2, 2, 4),
            torch.zeros(1, 2, 2),
            torch.ones(1, 2, 2, 3),
            torch.zeros(1, 2, 2),
            "SRC",
        )
