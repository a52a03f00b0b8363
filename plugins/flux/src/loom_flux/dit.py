"""The Flux diffusion transformer in ComfyUI's (Black Forest Labs') key layout.

``img_in``, ``txt_in``, ``time_in``, ``vector_in``, optional ``guidance_in`` (dev-style
models), ``double_blocks.N`` (separate image and text streams, joint attention),
``single_blocks.N`` (one fused stream) and ``final_layer``. Widths, head count, block counts
and input channels come from :class:`FluxConfig`, which :mod:`loom_flux.detect` reads off
the weights, so full-size, Fill (384 input channels), Canny/Depth (128) and tiny test models
share this code. Attention is ``scaled_dot_product_attention`` with rotary embeddings over
``(t, h, w)`` position ids. Layers come from :data:`loom.memory.ops`: weights stay in their
stored dtype (fp8 included) and are cast per layer to the compute dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from loom.errors import LoomError
from loom.memory import ops
from loom.types import ControlResiduals
from loom_flux.dit_blocks import (
    DoubleStreamBlock,
    LastLayer,
    MLPEmbedder,
    Modulation,
    SingleStreamBlock,
    SplitVec,
    Vec,
    add_residual,
    position_embedding,
    timestep_embedding,
)
from loom_flux.dit_config import FLUX_DEV, FLUX_SCHNELL, PATCH, FluxConfig, default_axes
from loom_flux.dit_options import BlockSkip, RopeScale
from loom_flux.dit_tokens import (
    DEFAULT_REFERENCE_METHOD,
    REFERENCE_METHODS,
    ReferencePlace,
    append_reference,
    image_ids,
    patchify,
    reference_positions,
    scaled_image_ids,
    unpatchify,
)

#: names other modules import from here (the DiT's building blocks live in
#: :mod:`loom_flux.dit_config`, :mod:`loom_flux.dit_blocks` and :mod:`loom_flux.dit_tokens`)
__all__ = [
    "DEFAULT_REFERENCE_METHOD",
    "FLUX_DEV",
    "FLUX_SCHNELL",
    "PATCH",
    "REFERENCE_METHODS",
    "FluxConfig",
    "FluxTransformer",
    "Modulation",
    "ReferencePlace",
    "SplitVec",
    "default_axes",
    "image_ids",
    "patchify",
    "position_embedding",
    "reference_positions",
    "timestep_embedding",
    "unpatchify",
]


class FluxTransformer(nn.Module):
    """``forward(x, timestep, context, y, guidance)``: latent ``[B, C, H, W]`` -> velocity.

    ``timestep`` is sigma (0..1); ``context`` the T5 tokens ``[B, T, 4096]``; ``y`` the CLIP-L
    pooled vector ``[B, 768]``; ``guidance`` (dev-style models) the distilled guidance scale.
    ``ref_latents`` (Kontext) are extra image tokens the image attends to, placed by
    ``ref_method``; only the image's own tokens come out.
    """

    def __init__(self, config: FluxConfig = FLUX_DEV) -> None:
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.img_in = ops.Linear(config.in_channels, dim)
        self.time_in = MLPEmbedder(256, dim)
        self.vector_in = MLPEmbedder(config.vec_dim, dim)
        if config.guidance_embed:
            self.guidance_in = MLPEmbedder(256, dim)
        self.txt_in = ops.Linear(config.context_dim, dim)
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(config) for _ in range(config.depth))
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(config) for _ in range(config.depth_single)
        )
        self.final_layer = LastLayer(dim, config.out_channels)

    def forward_tokens(
        self,
        img: torch.Tensor,
        img_ids: torch.Tensor,
        txt: torch.Tensor,
        txt_ids: torch.Tensor,
        timestep: torch.Tensor,
        y: torch.Tensor,
        guidance: torch.Tensor | None = None,
        zero_from: int | None = None,
        mask: torch.Tensor | None = None,
        control: ControlResiduals | None = None,
        skip: BlockSkip | None = None,
        txt_prefix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The transformer on packed tokens (diffusers' ``FluxTransformer2DModel`` shape).

        ``zero_from``: image tokens from this index on (references) are modulated with the
        vector of timestep 0 (:class:`SplitVec`); None: every token sees ``timestep``.
        ``mask``: an additive attention bias over text + image tokens.
        ``control``: ControlNet residuals, as ComfyUI adds them: ``input[i]`` to the image
        tokens after double block ``i``, ``output[i]`` to the image tokens after single
        block ``i`` (each to the first tokens it covers: reference tokens get none).
        ``skip``: blocks passed over (their input goes on unchanged; residuals still added).
        ``txt_prefix``: DiT-width tokens put before the text tokens after ``txt_in``, with
        position ids of zero (ComfyUI's ``post_input`` patch: USO's style tokens).
        """
        skip = skip or BlockSkip()
        img = self.img_in(img)
        vec = self._vec(timestep, y, guidance, img.dtype)
        img_vec: Vec = vec
        if zero_from is not None:
            zero = self._vec(timestep * 0, y, guidance, img.dtype)
            img_vec = SplitVec(vec, zero, zero_from, img.shape[1])
        txt = self.txt_in(txt.to(img.dtype))
        if txt_prefix is not None:
            txt = torch.cat((txt_prefix.to(txt), txt), dim=1)
            txt_ids = torch.cat((txt_ids.new_zeros(*txt_prefix.shape[:2], 3), txt_ids), dim=1)
        pe = position_embedding(
            torch.cat((txt_ids, img_ids), dim=1), self.config.axes_dim, self.config.theta
        )
        for i, block in enumerate(self.double_blocks):
            if i not in skip.double:
                img, txt = block(img, txt, vec, pe, img_vec, mask)
            if control is not None:
                img = add_residual(img, control.input, i, 0)
        x = torch.cat((txt, img), dim=1)
        joint_vec = img_vec.shifted(txt.shape[1]) if isinstance(img_vec, SplitVec) else vec
        for i, block in enumerate(self.single_blocks):
            if i not in skip.single:
                x = block(x, joint_vec, pe, mask)
            if control is not None:
                x = add_residual(x, control.output, i, txt.shape[1])
        return self.final_layer(x[:, txt.shape[1] :], vec)

    def _vec(
        self,
        timestep: torch.Tensor,
        y: torch.Tensor,
        guidance: torch.Tensor | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """The conditioning vector: timestep, guidance (dev-style) and pooled-text embeddings."""
        vec = self.time_in(timestep_embedding(timestep, 256).to(dtype))
        if self.config.guidance_embed and guidance is not None:
            vec = vec + self.guidance_in(timestep_embedding(guidance, 256).to(dtype))
        return vec + self.vector_in(y[:, : self.config.vec_dim].to(dtype))

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        y: torch.Tensor,
        guidance: torch.Tensor | None = None,
        ref_latents: list[torch.Tensor] | None = None,
        ref_method: str = DEFAULT_REFERENCE_METHOD,
        attention_mask: torch.Tensor | None = None,
        control: ControlResiduals | None = None,
        skip: BlockSkip | None = None,
        rope: RopeScale | None = None,
        txt_prefix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``ref_method``: how reference latents are placed (:func:`reference_positions`);
        ``control``: ControlNet residuals, ``skip``: blocks passed over, ``txt_prefix``:
        tokens before the text (:meth:`forward_tokens`); ``rope``: ScaleROPE's scaling of
        the image position ids."""
        b, _, h, w = x.shape
        pad_h, pad_w = (-h) % PATCH, (-w) % PATCH
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular")
        h_len, w_len = (h + pad_h) // PATCH, (w + pad_w) // PATCH
        img = patchify(x)
        if rope is None:
            img_ids = image_ids(b, h_len, w_len, x.device)
        else:
            img_ids = scaled_image_ids(b, h_len, w_len, x.device, rope)
        tokens = img.shape[1]
        refs = list(ref_latents or ())
        shapes = [tuple(ref.shape[-2:]) for ref in refs]
        for ref, place in zip(
            refs, reference_positions(ref_method, shapes, h_len, w_len), strict=True
        ):
            img, img_ids = append_reference(img, img_ids, ref.to(x), place, rope)
        zero_from = tokens if refs and ref_method == "index_timestep_zero" else None
        txt_ids = torch.zeros(b, context.shape[1], 3, device=x.device)
        if attention_mask is not None and attention_mask.shape[-1] != context.shape[1] + len(
            img_ids[0]
        ):
            raise LoomError(
                f"Flux: the conditioning's attention mask covers {attention_mask.shape[-1]} "
                f"tokens, but the model attends over {context.shape[1]} text and "
                f"{len(img_ids[0])} image tokens",
                hint="an attention mask (StyleModelApply attn_bias) cannot be combined with "
                "reference latents",
            )
        out = self.forward_tokens(
            img,
            img_ids,
            context,
            txt_ids,
            timestep,
            y,
            guidance,
            zero_from,
            attention_mask,
            control,
            skip,
            txt_prefix,
        )
        return unpatchify(out[:, :tokens], h_len, w_len)[:, :, :h, :w]
