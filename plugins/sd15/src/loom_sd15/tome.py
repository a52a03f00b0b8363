"""TomePatchModel: token merging (Bolya & Hoffman 2023, arXiv:2303.17604) for the UNet.

ComfyUI's ``comfy_extras/nodes_tomesd.py`` rule, through the UNet's
:class:`loom_sd15.unet_hooks.SelfAttentionTokenPatch`: at full latent resolution only, the
self-attention's query tokens are merged by bipartite soft matching (one destination token
per ``2 x 2`` cell, chosen at random, the rest sources; the ``int(N * ratio)`` sources most
similar by cosine to a destination are averaged into it), the keys and values stay whole,
and after ``to_out`` every merged token gets its destination's output back.

ComfyUI draws the destination cells from torch's global generator; Loom draws them from a
generator seeded per call from the step's sigma and the block
(:func:`loom_sd15.unet_hooks.site_seed`), so a run is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

import loom
from loom.types import Model
from loom_sd15.hypertile import with_token_patch
from loom_sd15.unet_hooks import AttentionSite, TokenRewrite, site_seed

ui = loom.ui

STRIDE = 2  # destination cells are STRIDE x STRIDE tokens
MAX_DOWNSAMPLE = 1  # merge only at the latent's own resolution


def _unchanged(x: Any) -> Any:
    return x


def bipartite_soft_matching(
    metric: Any, w: int, h: int, r: int, generator: Any
) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """``(merge, unmerge)`` for tokens ``metric`` ``[B, N, C]`` on an ``h x w`` grid,
    removing ``r`` tokens."""
    import torch

    b, n, _ = metric.shape
    if r <= 0 or w == 1 or h == 1:
        return _unchanged, _unchanged
    device = metric.device
    with torch.no_grad():
        hs, ws = h // STRIDE, w // STRIDE
        cells = STRIDE * STRIDE
        chosen = torch.randint(cells, size=(hs, ws, 1), generator=generator).to(device)
        marks = torch.zeros(hs, ws, cells, device=device, dtype=torch.int64)
        marks.scatter_(dim=2, index=chosen, src=-torch.ones_like(chosen))
        marks = marks.view(hs, ws, STRIDE, STRIDE).transpose(1, 2).reshape(hs * STRIDE, -1)
        if hs * STRIDE < h or ws * STRIDE < w:
            full = torch.zeros(h, w, device=device, dtype=torch.int64)
            full[: hs * STRIDE, : ws * STRIDE] = marks
            marks = full
        order = marks.reshape(1, -1, 1).argsort(dim=1)  # destinations (-1) first
        num_dst = hs * ws
        src_idx_all, dst_idx_all = order[:, num_dst:, :], order[:, :num_dst, :]

        def split(x: Any) -> tuple[Any, Any]:
            c = x.shape[-1]
            src = torch.gather(x, 1, src_idx_all.expand(b, n - num_dst, c))
            dst = torch.gather(x, 1, dst_idx_all.expand(b, num_dst, c))
            return src, dst

        a, d = split(metric / metric.norm(dim=-1, keepdim=True))
        scores = a @ d.transpose(-1, -2)
        r = min(a.shape[1], r)
        best, best_dst = scores.max(dim=-1)
        ranked = best.argsort(dim=-1, descending=True)[..., None]
        kept_idx, merged_idx = ranked[..., r:, :], ranked[..., :r, :]
        target_idx = torch.gather(best_dst[..., None], -2, merged_idx)

    def merge(x: Any) -> Any:
        src, dst = split(x)
        nb, t, c = src.shape
        kept = torch.gather(src, -2, kept_idx.expand(nb, t - r, c))
        merged = torch.gather(src, -2, merged_idx.expand(nb, r, c))
        dst = dst.scatter_reduce(-2, target_idx.expand(nb, r, c), merged, reduce="mean")
        return torch.cat([kept, dst], dim=1)

    def unmerge(x: Any) -> Any:
        kept_len = kept_idx.shape[1]
        kept, dst = x[..., :kept_len, :], x[..., kept_len:, :]
        c = kept.shape[-1]
        merged = torch.gather(dst, -2, target_idx.expand(b, r, c))
        out = torch.zeros(b, n, c, device=x.device, dtype=x.dtype)
        src_positions = src_idx_all.expand(b, src_idx_all.shape[1], 1)
        out.scatter_(-2, dst_idx_all.expand(b, num_dst, c), dst)
        kept_at = torch.gather(src_positions, 1, kept_idx).expand(b, kept_len, c)
        out.scatter_(-2, kept_at, kept)
        merged_at = torch.gather(src_positions, 1, merged_idx).expand(b, r, c)
        out.scatter_(-2, merged_at, merged)
        return out

    return merge, unmerge


@attrs.frozen
class TokenMergePatch:
    """The token patch: merge ``int(N * ratio)`` query tokens at full resolution."""

    ratio: float

    def __call__(self, query: Any, context: Any, site: AttentionSite) -> TokenRewrite:
        import torch

        _, _, height, width = site.site.call.latent_shape[:4]
        tokens = query.shape[1]
        downsample = math.ceil(math.sqrt(height * width // tokens))
        if downsample > MAX_DOWNSAMPLE:
            return TokenRewrite(query, context, _unchanged)
        w = math.ceil(width / downsample)
        h = math.ceil(height / downsample)
        r = int(tokens * self.ratio)
        generator = torch.Generator().manual_seed(site_seed(site))
        merge, unmerge = bipartite_soft_matching(query, w, h, r, generator)
        return TokenRewrite(merge(query), context, unmerge)


@loom.node("TomePatchModel", category="model_patches/unet", v3=True)
class TomePatchModel:
    # no docstring: /object_info's description is ComfyUI's (empty)

    model: Model
    ratio: float = ui.float(0.3, min=0.0, max=1.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Model:
        return with_token_patch(self.model, "TomePatchModel", TokenMergePatch(float(self.ratio)))


NODES = [TomePatchModel]
