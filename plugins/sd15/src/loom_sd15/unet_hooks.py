"""The typed patch points of the LDM UNet (SD1.x, SDXL) besides the output-block patch.

ComfyUI hands its UNet patches a ``transformer_options`` dict; here each patch gets the part it
reads as a typed value:

- :class:`UNetCall`: the call's input shape (ComfyUI's ``original_shape``), its per-item sigma
  and which conditioning group each batch chunk belongs to (``cond_or_uncond``);
- :class:`BlockSite`: that call at one block (``("input", i)`` / ``("middle", 0)`` /
  ``("output", i)``); an :class:`InputBlockPatch` gets one after each input block;
- :class:`AttentionSite`: one transformer block's self-attention within a block; a
  :class:`SelfAttentionTokenPatch` rewrites its tokens before the projections and after
  ``to_out`` (ComfyUI's ``attn1_patch`` / ``attn1_output_patch``), a
  :class:`SelfAttentionReplacement` computes its attention (``attn1`` replace).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:
    from torch import Tensor


@attrs.frozen
class UNetCall:
    """One UNet evaluation: ``latent_shape`` is the UNet input's shape (after any concat),
    ``sigma`` one value per batch item (None when the caller gave none) and
    ``cond_or_uncond`` the conditioning group index of each equal batch chunk (0 = the first
    group evaluated, the positive; 1 = the second, the negative)."""

    latent_shape: tuple[int, ...] = ()
    sigma: Tensor | None = None
    cond_or_uncond: tuple[int, ...] = ()


@attrs.frozen
class BlockSite:
    """A UNet call at one block: ``("input", i)``, ``("middle", 0)`` or ``("output", i)``,
    numbered as ``input_blocks`` / ``output_blocks`` (ComfyUI's block ids)."""

    call: UNetCall
    block: tuple[str, int]


@attrs.frozen
class AttentionSite:
    """One transformer block's self-attention: its :class:`BlockSite`, its index within the
    block's spatial transformer (``block_index``), the UNet-wide ``transformer_index`` of that
    spatial transformer and the attention's head count."""

    site: BlockSite
    block_index: int
    transformer_index: int
    heads: int


class InputBlockPatch(Protocol):
    """``patch(h, site) -> h``: the features an input block produced, rewritten (ComfyUI's
    ``input_block_patch``, or ``input_block_patch_after_skip`` when registered to run after
    the skip connection kept its copy)."""

    def __call__(self, h: Tensor, site: BlockSite) -> Tensor: ...


@attrs.frozen
class TokenRewrite:
    """What a :class:`SelfAttentionTokenPatch` makes of a self-attention's input: the tokens
    the queries are projected from, those the keys and values are projected from, and
    ``restore``, applied to the attention's output after ``to_out``."""

    query: Tensor
    context: Tensor
    restore: Callable[[Tensor], Tensor]


class SelfAttentionTokenPatch(Protocol):
    """Rewrites a self-attention's normed input tokens ``[B, N, C]`` (``query`` and
    ``context``, the same tensor unless an earlier patch changed one) before the q / k / v
    projections; its ``restore`` undoes the rewrite on the output. Patches run in the order
    added, and so do their restores (ComfyUI's ``attn1_patch`` / ``attn1_output_patch``)."""

    def __call__(self, query: Tensor, context: Tensor, site: AttentionSite) -> TokenRewrite: ...


class SelfAttentionReplacement(Protocol):
    """Computes a self-attention from its projected ``q``, ``k``, ``v`` (``[B, N, heads*d]``)
    in place of scaled dot-product attention; the result goes through ``to_out`` as usual.
    ``site`` says where and in which call (ComfyUI's ``attn1`` replace patch)."""

    def __call__(
        self, q: Tensor, k: Tensor, v: Tensor, heads: int, site: AttentionSite
    ) -> Tensor: ...


#: ``(block name, index) -> replacement`` for every transformer block of that block, or
#: ``(block name, index, block_index)`` for one (looked up first, as ComfyUI's keys)
SelfAttentionReplacements = Mapping[tuple, SelfAttentionReplacement]


class AttentionInputPatch(Protocol):
    """Rewrites an attention's inputs before their projections: the query tokens ``x``
    ``[B, N, C]``, the key context and the value context (``x`` itself for self-attention,
    the text embeddings for cross-attention), as ComfyUI's ``attn1_patch`` / ``attn2_patch``
    (hypernetworks). Returns the three, in that order."""

    def __call__(self, x: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]: ...


@attrs.frozen
class AttentionInputPatches:
    """The :class:`AttentionInputPatch` functions every transformer block applies, in order:
    ``self_attention`` to ``attn1``'s inputs, ``cross_attention`` to ``attn2``'s."""

    self_attention: tuple[AttentionInputPatch, ...] = ()
    cross_attention: tuple[AttentionInputPatch, ...] = ()


NO_INPUT_PATCHES = AttentionInputPatches()


@attrs.frozen
class BlockAttention:
    """What one block's spatial transformers apply to their attentions: self-attention
    replacements and token patches, and input patches of both attentions."""

    site: BlockSite
    replacements: SelfAttentionReplacements = attrs.field(factory=dict)
    token_patches: tuple[SelfAttentionTokenPatch, ...] = ()
    input_patches: AttentionInputPatches = NO_INPUT_PATCHES

    def replacement(self, block_index: int) -> SelfAttentionReplacement | None:
        """The replacement for transformer block ``block_index`` of this block, if any."""
        block = self.site.block
        found = self.replacements.get((*block, block_index))
        return found if found is not None else self.replacements.get(block)


def site_seed(site: AttentionSite) -> int:
    """A seed for a patch's random choices at ``site``: the same for the same step (sigma)
    and transformer block in every run, different from block to block and step to step."""
    sigma = site.site.call.sigma
    level = repr(float(sigma.reshape(-1)[0])) if sigma is not None else "-"
    return zlib.crc32(f"{level}/{site.transformer_index}/{site.block_index}".encode())
