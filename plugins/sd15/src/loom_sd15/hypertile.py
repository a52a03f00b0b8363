"""HyperTile (tfernd/HyperTile) for the SD1.x / SDXL UNet: self-attention over tiles.

ComfyUI 0.8's ``comfy_extras/nodes_hypertile.py`` rule, through the UNet's
:class:`loom_sd15.unet_hooks.SelfAttentionTokenPatch`: at the depths whose token count is the
latent's area divided by ``4**i`` (``i <= max_depth``), the queries are cut into
``nh x nw`` tiles, each its own batch item, and put back after ``to_out``. The keys and values
are left whole; the attention views them with the queries' batch, so each tile attends to
its own consecutive run of tokens, as in ComfyUI.

Tile counts: the largest divisors of the token grid's sides giving tiles of at least
``max(32, tile_size) // 8`` tokens (times ``2**i`` with ``scale_depth``), one of the first
``swap_size`` picked by ``randint(0, len - 1)`` (never the last when there are several;
none drawn when there is one). ComfyUI draws from torch's global generator; Loom draws from a
generator seeded per call from the step's sigma and the block
(:func:`loom_sd15.unet_hooks.site_seed`), so a run is reproducible.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

import loom
from loom.errors import LoomError
from loom.types import Model
from loom_sd15.unet_hooks import AttentionSite, TokenRewrite, site_seed

ui = loom.ui


def tile_counts(value: int, min_value: int, max_options: int, generator: Any) -> int:
    """How many tiles to cut ``value`` tokens into (ComfyUI's ``random_divisor``)."""
    import torch

    min_value = min(min_value, value)
    divisors = [i for i in range(min_value, value + 1) if value % i == 0]
    counts = [value // i for i in divisors[:max_options]]
    if len(counts) > 1:
        index = int(torch.randint(0, len(counts) - 1, (1,), generator=generator).item())
    else:
        index = 0
    return counts[index]


def tile(tokens: Any, nh: int, nw: int, h: int, w: int) -> Any:
    """``[B, h*w, C]`` row-major tokens -> ``[B*nh*nw, (h/nh)*(w/nw), C]`` tiles."""
    b, _, c = tokens.shape
    grid = tokens.reshape(b, nh, h // nh, nw, w // nw, c).permute(0, 1, 3, 2, 4, 5)
    return grid.reshape(b * nh * nw, (h // nh) * (w // nw), c)


def untile(tiles: Any, nh: int, nw: int, h: int, w: int) -> Any:
    """The inverse of :func:`tile`."""
    _, _, c = tiles.shape
    grid = tiles.reshape(-1, nh, nw, h // nh, w // nw, c).permute(0, 1, 3, 2, 4, 5)
    return grid.reshape(-1, h * w, c)


def _unchanged(out: Any) -> Any:
    return out


@attrs.frozen
class HyperTilePatch:
    """The token patch; ``latent_tile_size`` is ``max(32, tile_size) // 8``."""

    latent_tile_size: int
    swap_size: int
    max_depth: int
    scale_depth: bool

    def __call__(self, query: Any, context: Any, site: AttentionSite) -> TokenRewrite:
        import torch

        shape = site.site.call.latent_shape
        tokens = query.shape[-2]
        areas = [(shape[-2] / 2**i) * (shape[-1] / 2**i) for i in range(self.max_depth + 1)]
        if tokens not in areas:
            return TokenRewrite(query, context, _unchanged)
        aspect = shape[-1] / shape[-2]
        h, w = round(math.sqrt(tokens * aspect)), round(math.sqrt(tokens / aspect))
        factor = 2 ** areas.index(tokens) if self.scale_depth else 1
        generator = torch.Generator().manual_seed(site_seed(site))
        minimum = self.latent_tile_size * factor
        nh = tile_counts(h, minimum, self.swap_size, generator)
        nw = tile_counts(w, minimum, self.swap_size, generator)
        if nh * nw <= 1:
            return TokenRewrite(query, context, _unchanged)
        return TokenRewrite(
            tile(query, nh, nw, h, w), context, lambda out: untile(out, nh, nw, h, w)
        )


@loom.node("HyperTile", category="model_patches/unet", v3=True)
class HyperTile:
    # no docstring: /object_info's description is ComfyUI's (empty)

    model: Model
    tile_size: int = ui.int(256, min=1, max=2048)
    swap_size: int = ui.int(2, min=1, max=128)
    max_depth: int = ui.int(0, min=0, max=10)
    scale_depth: bool = ui.boolean(False)

    def run(self, ctx: loom.RunContext) -> Model:
        patch = HyperTilePatch(
            max(32, int(self.tile_size)) // 8,
            int(self.swap_size),
            int(self.max_depth),
            bool(self.scale_depth),
        )
        return with_token_patch(self.model, "HyperTile", patch)


def with_token_patch(model: Model, node: str, patch: Any) -> Model:
    """A clone of ``model`` with ``patch`` added to its self-attention token patches."""
    if not hasattr(model, "self_attention_token_patches"):
        raise LoomError(
            f"{node}: the model {getattr(model, 'name', type(model).__name__)} is not a UNet "
            "with self-attention blocks",
            hint=f"{node} applies to SD1.x and SDXL models",
        )
    patched = model.clone()
    patched.self_attention_token_patches = (*model.self_attention_token_patches, patch)
    return patched


NODES = [HyperTile]
