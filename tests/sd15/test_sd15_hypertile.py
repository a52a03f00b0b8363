"""HyperTile: tile counts by ComfyUI's rule, tiling reversibility, the token patch inside the
UNet against a hand computation, and /object_info."""

from __future__ import annotations

import math

import pytest
import torch
from loom_sd15.hypertile import HyperTile, HyperTilePatch, tile, tile_counts, untile
from loom_sd15.unet import UNetCall, UNetConfig, UNetModel
from loom_sd15.unet_hooks import AttentionSite, BlockSite

from loom.errors import LoomError


def test_tile_counts_follow_comfyuis_divisor_rule():
    gen = torch.Generator().manual_seed(0)
    # 16 tokens, tiles of at least 4: divisors 4, 8, 16 -> 4, 2, 1 tiles
    assert tile_counts(16, 4, 1, gen) == 4  # one option: the most tiles
    draws = {tile_counts(16, 4, 3, torch.Generator().manual_seed(s)) for s in range(40)}
    assert draws == {4, 2}  # randint(0, len - 1): never the last option
    assert {tile_counts(16, 4, 2, torch.Generator().manual_seed(s)) for s in range(20)} == {4}
    assert tile_counts(6, 32, 2, gen) == 1  # a side shorter than a tile: one tile
    assert tile_counts(12, 5, 1, gen) == 2  # smallest divisor >= 5 is 6


def test_tiling_is_reversible_and_cuts_2d_tiles():
    tokens = torch.arange(2 * 8 * 12 * 3, dtype=torch.float32).reshape(2, 8 * 12, 3)
    tiles = tile(tokens, 2, 3, 8, 12)
    assert tiles.shape == (2 * 6, 4 * 4, 3)
    grid = tokens.reshape(2, 8, 12, 3)
    # tile (item 1, row 1, column 2): rows 4..7, columns 8..11
    expected = grid[1, 4:8, 8:12].reshape(16, 3)
    assert torch.equal(tiles[1 * 6 + 1 * 3 + 2], expected)
    assert torch.equal(untile(tiles, 2, 3, 8, 12), tokens)


def site(latent: tuple[int, ...], sigma: float = 1.0) -> AttentionSite:
    call = UNetCall(latent_shape=latent, sigma=torch.tensor([sigma]))
    return AttentionSite(BlockSite(call, ("input", 1)), 0, 0, 2)


def test_patch_tiles_only_the_depths_it_covers():
    query = torch.randn(1, 64, 8)
    patch = HyperTilePatch(latent_tile_size=4, swap_size=1, max_depth=0, scale_depth=False)
    rewrite = patch(query, query, site((1, 4, 8, 8)))
    assert rewrite.query.shape == (4, 16, 8)  # 8 x 8 tokens in 2 x 2 tiles of 4 x 4
    assert rewrite.context is query  # keys and values stay whole
    assert torch.equal(rewrite.restore(rewrite.query), query)
    deeper = torch.randn(1, 16, 8)  # 4 x 4 tokens: depth 1, not covered
    assert patch(deeper, deeper, site((1, 4, 8, 8))).query is deeper
    covered = HyperTilePatch(2, 1, 1, False)(deeper, deeper, site((1, 4, 8, 8)))
    assert covered.query.shape == (4, 4, 8)
    scaled = HyperTilePatch(2, 1, 1, True)(deeper, deeper, site((1, 4, 8, 8)))
    assert scaled.query is deeper  # tiles of at least 2 * 2 a side: one tile


def test_patched_unet_equals_attention_over_tiles_by_hand():
    config = UNetConfig(
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(0,),
        num_heads=2,
        context_dim=16,
    )
    torch.manual_seed(0)
    unet = UNetModel(config).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    t, context = torch.tensor([500.0]), torch.randn(1, 5, 16, generator=gen)

    def tiled_attention(module, args, output):
        # queries in 2 x 2 tiles of 4 x 4 tokens; keys / values viewed with the tiles'
        # batch: tile i attends to tokens 16 i .. 16 i + 15 (ComfyUI's attention views)
        n = args[0]
        if n.shape[1] != 64:  # the middle block's 4 x 4 tokens: depth 1, left alone
            return output
        q = tile(module.to_q(n), 2, 2, 8, 8)
        k, v = module.to_k(n).reshape(4, 16, -1), module.to_v(n).reshape(4, 16, -1)
        heads, d = module.heads, q.shape[-1] // module.heads
        split = [t.reshape(4, 16, heads, d).transpose(1, 2) for t in (q, k, v)]
        weights = torch.softmax(split[0] @ split[1].transpose(-1, -2) / math.sqrt(d), dim=-1)
        out = (weights @ split[2]).transpose(1, 2).reshape(4, 16, -1)
        return untile(module.to_out(out), 2, 2, 8, 8)

    blocks = [m for m in unet.modules() if hasattr(m, "attn1")]
    hooks = [block.attn1.register_forward_hook(tiled_attention) for block in blocks]
    try:
        with torch.no_grad():
            by_hand = unet(x, t, context)
    finally:
        for hook in hooks:
            hook.remove()
    patch = HyperTilePatch(latent_tile_size=4, swap_size=1, max_depth=0, scale_depth=False)
    with torch.no_grad():
        plain = unet(x, t, context)
        patched = unet(x, t, context, self_attention_token_patches=[patch])
    torch.testing.assert_close(patched, by_hand, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(patched, plain, atol=1e-4)


def test_node_on_a_model_without_unet_attention_names_the_node():
    class NotAUNet:
        name = "flux-dit"

    with pytest.raises(LoomError, match="HyperTile: the model flux-dit"):
        HyperTile(model=NotAUNet(), tile_size=256, swap_size=2, max_depth=0).run(None)


def test_object_info_is_comfyuis(runtime):
    from loom.nodes.object_info import object_info

    entry = object_info(runtime.registry, runtime.environment)["HyperTile"]
    assert entry["input"]["required"] == {
        "model": ["MODEL", {}],
        "tile_size": ["INT", {"default": 256, "min": 1, "max": 2048}],
        "swap_size": ["INT", {"default": 2, "min": 1, "max": 128}],
        "max_depth": ["INT", {"default": 0, "min": 0, "max": 10}],
        "scale_depth": ["BOOLEAN", {"default": False}],
    }
    assert (entry["output"], entry["category"]) == (["MODEL"], "model_patches/unet")
    assert entry["python_module"] == "comfy_extras.nodes_hypertile"
