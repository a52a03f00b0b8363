"""TomePatchModel: bipartite soft matching merge / unmerge against a hand computation, the
full-resolution-only rule, the token patch inside the UNet, and /object_info."""

from __future__ import annotations

import attrs
import pytest
import torch
from loom_sd15.tome import TokenMergePatch, TomePatchModel, bipartite_soft_matching
from loom_sd15.unet import UNetCall, UNetConfig, UNetModel
from loom_sd15.unet_hooks import AttentionSite, BlockSite

from loom.errors import LoomError


def cell_tokens(channels: int = 6) -> torch.Tensor:
    """A 4 x 4 token grid whose 2 x 2 cells each point their own way (plus a little noise)."""
    gen = torch.Generator().manual_seed(0)
    directions = torch.eye(channels)[:4] * 10
    grid = torch.zeros(1, 4, 4, channels)
    for cell in range(4):
        row, col = divmod(cell, 2)
        grid[0, 2 * row : 2 * row + 2, 2 * col : 2 * col + 2] = directions[cell]
    grid = grid + 0.1 * torch.rand(grid.shape, generator=gen)
    return grid.reshape(1, 16, channels)


def cell_means(tokens: torch.Tensor) -> torch.Tensor:
    grid = tokens.reshape(1, 2, 2, 2, 2, -1)  # item, cell row, row in cell, cell col, col
    means = grid.mean(dim=(2, 4), keepdim=True).expand_as(grid)
    return means.reshape(tokens.shape)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merging_every_source_averages_each_cell_into_its_destination(seed):
    tokens = cell_tokens()
    gen = torch.Generator().manual_seed(seed)
    merge, unmerge = bipartite_soft_matching(tokens, 4, 4, 12, gen)
    merged = merge(tokens)
    assert merged.shape == (1, 4, 6)  # one token per 2 x 2 cell
    expected = cell_means(tokens)
    torch.testing.assert_close(unmerge(merged), expected, rtol=1e-6, atol=1e-6)


def test_partial_merge_keeps_the_unmatched_tokens():
    tokens = cell_tokens()
    merge, unmerge = bipartite_soft_matching(tokens, 4, 4, 4, torch.Generator().manual_seed(3))
    merged = merge(tokens)
    assert merged.shape == (1, 12, 6)
    restored = unmerge(merged)
    unchanged = (restored == tokens).all(dim=-1)[0]
    assert int(unchanged.sum()) >= 16 - 2 * 4  # 4 sources and at most 4 destinations moved
    # a merged token and its destination carry the same (averaged) value, from its own cell
    for index in torch.nonzero(~unchanged).flatten().tolist():
        row, col = divmod(index, 4)
        cell = [
            4 * r + c
            for r in (row // 2 * 2, row // 2 * 2 + 1)
            for c in (col // 2 * 2, col // 2 * 2 + 1)
        ]
        partners = [i for i in cell if torch.equal(restored[0, i], restored[0, index])]
        assert len(partners) >= 2


def test_no_merge_at_ratio_zero_or_on_a_one_token_row():
    tokens = cell_tokens()
    merge, unmerge = bipartite_soft_matching(tokens, 4, 4, 0, torch.Generator())
    assert merge(tokens) is tokens and unmerge(tokens) is tokens
    merge, _ = bipartite_soft_matching(tokens, 16, 1, 4, torch.Generator())
    assert merge(tokens) is tokens


def site(latent: tuple[int, ...]) -> AttentionSite:
    call = UNetCall(latent_shape=latent, sigma=torch.tensor([1.0]))
    return AttentionSite(BlockSite(call, ("input", 1)), 0, 0, 2)


def test_patch_merges_only_at_full_resolution():
    tokens = cell_tokens()
    rewrite = TokenMergePatch(0.5)(tokens, tokens, site((1, 4, 4, 4)))
    assert rewrite.query.shape == (1, 8, 6) and rewrite.context is tokens
    assert rewrite.restore(rewrite.query).shape == tokens.shape
    half = TokenMergePatch(0.5)(tokens, tokens, site((1, 4, 8, 8)))  # 16 of 64 tokens
    assert half.query is tokens


def test_patched_unet_changes_full_resolution_attention_only():
    config = UNetConfig(
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(1,),
        num_heads=2,
        context_dim=16,
    )
    torch.manual_seed(0)
    unet = UNetModel(config).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    t, context = torch.tensor([500.0]), torch.randn(1, 5, 16, generator=gen)
    call = UNetCall(sigma=torch.tensor([1.0]))
    with torch.no_grad():
        plain = unet(x, t, context)
        # attention only at half resolution: nothing merges (ComfyUI's max_downsample 1)
        merged = unet(x, t, context, self_attention_token_patches=[TokenMergePatch(0.9)], call=call)
        full = UNetModel(attrs.evolve(config, attention_levels=(0, 1))).eval()
    assert torch.equal(merged, plain)
    with torch.no_grad():
        full_plain = full(x, t, context)
        full_merged = full(
            x, t, context, self_attention_token_patches=[TokenMergePatch(0.5)], call=call
        )
        again = full(x, t, context, self_attention_token_patches=[TokenMergePatch(0.5)], call=call)
    assert not torch.allclose(full_merged, full_plain, atol=1e-4)
    assert torch.equal(full_merged, again)  # same step and block: the same partition


def test_node_on_a_model_without_unet_attention_names_the_node():
    class NotAUNet:
        name = "flux-dit"

    with pytest.raises(LoomError, match="TomePatchModel: the model flux-dit"):
        TomePatchModel(model=NotAUNet(), ratio=0.3).run(None)


def test_object_info_is_comfyuis(runtime):
    from loom.nodes.object_info import object_info

    entry = object_info(runtime.registry, runtime.environment)["TomePatchModel"]
    assert entry["input"]["required"] == {
        "model": ["MODEL", {}],
        "ratio": ["FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01}],
    }
    assert (entry["output"], entry["category"]) == (["MODEL"], "model_patches/unet")
    assert entry["python_module"] == "comfy_extras.nodes_tomesd"
