"""PerturbedAttentionGuidance's hook in the SDXL UNet: the middle block's self-attention
replaced by identity equals a hand perturbation of that block (SDXL reuses loom-sd15's blocks)."""

from __future__ import annotations

import torch
from loom_sd15.pag import identity_attention
from loom_sdxl.unet import SDXLUNetConfig, SDXLUNetModel


def test_sdxl_unet_identity_middle_attention_equals_a_hand_perturbation():
    config = SDXLUNetConfig(
        model_channels=32,
        channel_mult=(1, 2),
        transformer_depths=(0, 1),
        middle_depth=2,
        context_dim=32,
        adm_in_channels=64,
    )
    torch.manual_seed(0)
    unet = SDXLUNetModel(config).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    t = torch.tensor([400.0])
    context = torch.randn(1, 7, 32, generator=gen)
    y = torch.randn(1, 64, generator=gen)
    transformer = next(layer for layer in unet.middle_block if hasattr(layer, "transformer_blocks"))
    hooks = [
        block.attn1.register_forward_hook(lambda m, a, o: m.to_out(m.to_v(a[0])))
        for block in transformer.transformer_blocks
    ]
    try:
        with torch.no_grad():
            by_hand = unet(x, t, context, y)
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        plain = unet(x, t, context, y)
        replaced = unet(
            x, t, context, y, self_attention_replacements={("middle", 0): identity_attention}
        )
    torch.testing.assert_close(replaced, by_hand, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(plain, replaced, atol=1e-4)
