"""What a Flux DiT's weights say about it: :class:`FluxConfig` and the patch size.

:mod:`loom_flux.detect` reads a config off the weights, so full-size, Fill (384 input
channels), Canny/Depth (128) and tiny test models share one transformer.
"""

from __future__ import annotations

import attrs

PATCH = 2


def default_axes(head_dim: int) -> tuple[int, int, int]:
    """Rotary channels per (t, h, w) axis: Flux's (16, 56, 56) at head width 128, and the
    same proportions (rounded to even) for other widths."""
    side = (head_dim * 7 // 16) // 2 * 2
    return (head_dim - 2 * side, side, side)


@attrs.frozen
class FluxConfig:
    """What the weights say about a Flux DiT (defaults: Flux.1 dev at full size)."""

    in_channels: int = 64
    out_channels: int = 64
    hidden_size: int = 3072
    num_heads: int = 24
    context_dim: int = 4096
    vec_dim: int = 768
    mlp_ratio: float = 4.0
    depth: int = 19
    depth_single: int = 38
    guidance_embed: bool = True
    qkv_bias: bool = True
    theta: int = 10_000
    axes_dim: tuple[int, ...] = attrs.field(
        default=None, converter=attrs.converters.optional(tuple)
    )

    def __attrs_post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden size {self.hidden_size} is not a multiple of {self.num_heads} heads"
            )
        if self.axes_dim is None:
            object.__setattr__(self, "axes_dim", default_axes(self.head_dim))
        if sum(self.axes_dim) != self.head_dim:
            raise ValueError(
                f"rotary axes {self.axes_dim} do not sum to head width {self.head_dim}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def latent_channels(self) -> int:
        """Channels of the noisy latent (the rest of ``in_channels`` is concat conditioning)."""
        return self.out_channels // (PATCH * PATCH)


FLUX_DEV = FluxConfig()
FLUX_SCHNELL = FluxConfig(guidance_embed=False)
