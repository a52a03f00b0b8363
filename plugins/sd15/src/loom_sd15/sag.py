"""SelfAttentionGuidance (Hong et al. 2023, arXiv:2210.00939) for the SD1.x / SDXL UNet.

ComfyUI's ``comfy_extras/nodes_sag.py`` rule. While the negative is evaluated, the first
transformer block of the middle block records its self-attention map (an
:class:`AttentionRecorder` in the UNet's ``("middle", 0, 0)`` self-attention replacement).
After CFG, the negative's x0 is blurred where that map says the image attends most
(:func:`degraded_x0`), the negative is predicted again from the blurred x0 re-noised, and the
guided x0 moves away from that prediction: ``denoised + (degraded - sag) * scale``.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

import loom
from loom.errors import LoomError
from loom.samplers import PostCFGStep, guidance_hooks_of
from loom.types import Model

ui = loom.ui

#: the middle block's first transformer block, where ComfyUI records the attention
RECORDED_BLOCK = ("middle", 0, 0)
#: the attention a key token must receive in total (mean over heads) to be blurred
THRESHOLD = 1.0
KERNEL_SIZE = 9


def attention_map(q: Any, k: Any, heads: int) -> Any:
    """``softmax(q kᵀ / √d)`` per item and head: ``[B * heads, N, N]`` in float32."""
    import torch

    b, _n, inner = q.shape
    d = inner // heads
    q, k = (
        t.reshape(b, -1, heads, d).permute(0, 2, 1, 3).reshape(b * heads, -1, d) for t in (q, k)
    )
    scores = torch.bmm(q.float(), k.float().transpose(1, 2)) * d**-0.5
    return scores.softmax(dim=-1)


@attrs.define(eq=False)
class AttentionRecorder:
    """A self-attention replacement that computes the attention as usual and, in a call whose
    batch holds the negative (group 1 of ``cond_or_uncond``), keeps the negative chunk's
    attention map in ``scores``."""

    scores: Any = None

    def __call__(self, q: Any, k: Any, v: Any, heads: int, site: Any) -> Any:
        from loom_sd15.unet import attention

        out = attention(q, k, v, heads)
        groups = site.site.call.cond_or_uncond
        if 1 in groups:
            per_chunk = q.shape[0] // len(groups) * heads
            start = per_chunk * groups.index(1)
            maps = attention_map(q, k, heads)
            self.scores = maps[start : start + per_chunk]
        return out


def gaussian_blur(image: Any, kernel_size: int, sigma: float) -> Any:
    """``image`` ``[B, C, H, W]`` blurred per channel by a normalised Gaussian kernel,
    reflect-padded (the kernel of ComfyUI's ``gaussian_blur_2d``)."""
    import torch
    import torch.nn.functional as F

    half = (kernel_size - 1) * 0.5
    taps = torch.linspace(-half, half, steps=kernel_size)
    pdf = torch.exp(-0.5 * (taps / sigma).pow(2))
    kernel = (pdf / pdf.sum()).to(device=image.device, dtype=image.dtype)
    kernel2d = torch.mm(kernel[:, None], kernel[None, :])
    channels = image.shape[-3]
    kernel2d = kernel2d.expand(channels, 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    padded = F.pad(image, [pad, pad, pad, pad], mode="reflect")
    return F.conv2d(padded, kernel2d, groups=channels)


def degraded_x0(x0: Any, scores: Any, blur_sigma: float, threshold: float = THRESHOLD) -> Any:
    """``x0`` blurred where the middle-block attention map marks it: a key token is marked
    when the attention it receives, summed over queries and averaged over heads, exceeds
    ``threshold``; the token grid is scaled back up to the latent (nearest)."""
    import torch.nn.functional as F

    _, tokens, _ = scores.shape
    batch, _, height, width = x0.shape
    per_item = scores.reshape(batch, -1, tokens, tokens)
    marked = per_item.mean(1).sum(1) > threshold
    ratio = 2 ** (math.ceil(math.sqrt(height * width / tokens)) - 1).bit_length()
    grid = (math.ceil(height / ratio), math.ceil(width / ratio))
    mask = marked.reshape(batch, *grid).unsqueeze(1).to(scores.dtype)
    mask = F.interpolate(mask, (height, width))
    blurred = gaussian_blur(x0, KERNEL_SIZE, blur_sigma)
    return blurred * mask + x0 * (1 - mask)


@attrs.frozen
class SelfAttentionGuided:
    """The post-CFG function of :class:`SelfAttentionGuidance`."""

    scale: float
    blur_sigma: float
    recorder: AttentionRecorder = attrs.field(eq=False)

    def __call__(self, step: PostCFGStep) -> Any:
        denoised = step.denoised
        if min(denoised.shape[2:]) <= 4:  # too small for the blur's reflect padding
            return denoised
        scores = self.recorder.scores
        if scores is None or step.predict_negative is None:
            return denoised
        uncond = step.uncond_denoised
        degraded = degraded_x0(uncond, scores.to(uncond.device), self.blur_sigma)
        sag = step.predict_negative(degraded + step.x - uncond)
        return denoised + (degraded - sag) * self.scale


@loom.node(
    "SelfAttentionGuidance",
    category="_for_testing",
    display_name="Self-Attention Guidance",
    experimental=True,
    v3=True,
)
class SelfAttentionGuidance:
    # no docstring: /object_info's description is ComfyUI's (empty)

    model: Model
    scale: float = ui.float(0.5, min=-2.0, max=5.0, step=0.01)
    blur_sigma: float = ui.float(2.0, min=0.0, max=10.0, step=0.1)

    def run(self, ctx: loom.RunContext) -> Model:
        model = self.model
        if not hasattr(model, "self_attention_replacements"):
            raise LoomError(
                "SelfAttentionGuidance: the model "
                f"{getattr(model, 'name', type(model).__name__)} is not a UNet with "
                "self-attention blocks",
                hint="SelfAttentionGuidance applies to SD1.x and SDXL models",
            )
        recorder = AttentionRecorder()
        patched = model.clone()
        patched.self_attention_replacements = {
            **model.self_attention_replacements,
            RECORDED_BLOCK: recorder,
        }
        function = SelfAttentionGuided(float(self.scale), float(self.blur_sigma), recorder)
        hooks = guidance_hooks_of(patched).with_post_cfg(function, disable_cfg1_optimization=True)
        patched.guidance = hooks
        return patched


NODES = [SelfAttentionGuidance]
