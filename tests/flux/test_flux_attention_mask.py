"""Attention masks on Flux (ComfyUI's ``attention_mask`` conditioning, which
``StyleModelApply``'s ``attn_bias`` writes): resized to the token grid, applied as an
additive bias in every block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from loom_flux.dit import FluxTransformer
from loom_flux.model import resize_joint_mask
from loom_flux.tiny import dit_state, tiny_spec


def _dit() -> FluxTransformer:
    config = tiny_spec().dit
    dit = FluxTransformer(config).eval()
    dit.load_state_dict(dit_state(config, seed=6))
    return dit


def _inputs(text_tokens: int = 5):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 4, 6, generator=g)  # 2 x 3 image tokens
    return x, (
        torch.tensor([0.6]),
        torch.randn(1, text_tokens, 32, generator=g),
        torch.randn(1, 32, generator=g),
        torch.tensor([2.5]),
    )


def test_a_zero_mask_changes_nothing_and_minus_inf_columns_hide_tokens():
    dit = _dit()
    x, (t, context, y, guidance) = _inputs(text_tokens=7)
    with torch.no_grad():
        plain = dit(x, t, context, y, guidance)
        zeros = dit(x, t, context, y, guidance, attention_mask=torch.zeros(1, 13, 13))
        # hide text tokens 5 and 6 from every query: as if the context had 5 tokens
        hide = torch.zeros(1, 13, 13)
        hide[:, :, 5:7] = float("-inf")
        hidden = dit(x, t, context, y, guidance, attention_mask=hide)
        shorter = dit(x, t, context[:, :5], y, guidance)
    torch.testing.assert_close(zeros, plain, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(hidden, shorter, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(hidden, plain, atol=1e-4)


def test_the_mask_is_resized_to_the_token_grid_as_comfyui_does():
    text, (hi, wi), (ho, wo) = 3, (2, 2), (4, 6)
    g = torch.Generator().manual_seed(0)
    mask = torch.randn(1, text + hi * wi, text + hi * wi, generator=g)

    out = resize_joint_mask(mask, (hi, wi), (ho, wo))

    assert out.shape == (1, text + ho * wo, text + ho * wo)
    torch.testing.assert_close(out[:, :text, :text], mask[:, :text, :text])
    to_image = mask[:, :text, text:].reshape(1, text, hi, wi)
    expected = F.interpolate(to_image, size=(ho, wo), mode="bilinear").reshape(1, text, -1)
    torch.testing.assert_close(out[:, :text, text:], expected)
    assert resize_joint_mask(mask, (2, 2), (2, 2)) is mask


def test_a_one_token_placeholder_is_broadcast_keeping_minus_inf():
    mask = torch.zeros(1, 4, 4, dtype=torch.float16)
    mask[:, :3, 3] = float("-inf")
    out = resize_joint_mask(mask, (1, 1), (2, 3))
    assert out.shape == (1, 9, 9) and not torch.isnan(out).any()
    assert torch.all(out[:, :3, 3:] == float("-inf")) and torch.all(out[:, 3:, :3] == 0)
