"""The UNet's patch plumbing: the hooks its forward takes and how each one is applied.

One hook reaches inside the transformer blocks: a :class:`SelfAttentionPatch` given to
:meth:`loom_sd15.unet.UNetModel.forward` runs on each block's tokens right after its self-attention
(ComfyUI's ``middle_patch``; GLIGEN's gated layers use it, :mod:`loom_sd15.gligen`).
Another sits between the decoder and its skip connections: the :class:`OutputBlockPatch`
functions given to :meth:`loom_sd15.unet.UNetModel.forward` rewrite both before each output block joins them
(ComfyUI's ``output_block_patch``; FreeU uses it, :mod:`loom_sd15.freeu`; SDXL's UNet too).
A :class:`SelfAttentionReplacement` chosen per block (``("middle", 0)``, ``("input", 4)``...)
or per transformer block (``("middle", 0, 0)``) computes the self-attention of that block's
transformers in place of SDPA (ComfyUI's ``attn1`` patch replace; PerturbedAttentionGuidance
and SelfAttentionGuidance use it, :mod:`loom_sd15.pag`, :mod:`loom_sd15.sag`).
:class:`SelfAttentionTokenPatch` functions rewrite every self-attention's tokens before the
projections and after ``to_out`` (``attn1_patch`` / ``attn1_output_patch``: HyperTile, ToMe),
and :class:`InputBlockPatch` functions each input block's output before or after the skip
connection keeps it (``input_block_patch`` / ``..._after_skip``: deep shrink). These typed
contracts, and the :class:`UNetCall` they are given, live in :mod:`loom_sd15.unet_hooks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from loom.types import ControlResiduals
from loom_sd15.unet_hooks import (
    NO_INPUT_PATCHES,
    AttentionInputPatches,
    BlockAttention,
    BlockSite,
    InputBlockPatch,
    SelfAttentionReplacements,
    SelfAttentionTokenPatch,
    UNetCall,
)

if TYPE_CHECKING:
    import torch


class SelfAttentionPatch(Protocol):
    """Runs on a transformer block's tokens ``[B, H*W, C]`` right after its self-attention
    (residual added) and before its cross-attention; returns the new tokens.

    ``transformer_index`` numbers the UNet's spatial transformers in order (input blocks,
    middle block, output blocks), as ComfyUI's ``transformer_index``.
    """

    def __call__(self, x: torch.Tensor, transformer_index: int) -> torch.Tensor: ...


class OutputBlockPatch(Protocol):
    """``patch(h, skip) -> (h, skip)``: the decoder features and the skip connection an
    output block is about to concatenate, rewritten (after any control residual is added)."""

    def __call__(
        self, h: torch.Tensor, skip: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def patch_output_block(
    patches: Sequence[OutputBlockPatch], h: torch.Tensor, skip: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h, skip)`` through each patch in order."""
    for patch in patches:
        h, skip = patch(h, skip)
    return h, skip


def patch_input_block(
    patches: Sequence[InputBlockPatch], h: torch.Tensor, site: BlockSite
) -> torch.Tensor:
    """``h`` through each input-block patch in order."""
    for patch in patches:
        h = patch(h, site)
    return h


def block_attention(
    call: UNetCall,
    block: tuple[str, int],
    replacements: SelfAttentionReplacements | None,
    token_patches: Sequence[SelfAttentionTokenPatch],
    input_patches: AttentionInputPatches | None = None,
) -> BlockAttention | None:
    """What the transformers of ``block`` apply to their attentions (None: nothing)."""
    inputs = input_patches or NO_INPUT_PATCHES
    if not replacements and not token_patches and inputs == NO_INPUT_PATCHES:
        return None
    return BlockAttention(BlockSite(call, block), replacements or {}, tuple(token_patches), inputs)


def add_control(
    h: torch.Tensor, control: ControlResiduals | None, where: str, index: int
) -> torch.Tensor:
    """``h`` plus the control residual at ``where`` (``input`` / ``middle`` / ``output``)
    ``index``, if the control signal has one there."""
    if control is None:
        return h
    residuals = getattr(control, where)
    if index >= len(residuals) or residuals[index] is None:
        return h
    return h + residuals[index].to(h.device, h.dtype)
