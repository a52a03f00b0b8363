"""Flux ControlNets: a shortened copy of the Flux DiT whose per-block image tokens, through one
linear layer each, become residuals for the model's double and single blocks.

Two kinds of file, as ComfyUI loads them:

- **InstantX / diffusers** (``FluxControlNetModel``: ``transformer_blocks.*``,
  ``controlnet_blocks.*``, ``controlnet_single_blocks.*``, ``controlnet_x_embedder``, union
  files also ``controlnet_mode_embedder``): the hint is the VAE-encoded control image (in
  model space, patchified); 17-channel variants take a mask channel too. The residual of
  ControlNet block ``k`` goes to ``ceil(19 / n)`` consecutive model blocks.
- **XLabs** (Flux's own key layout: ``double_blocks.*``, ``controlnet_blocks.*``,
  ``input_hint_block.*``): the hint is the image in pixels (``[-1, 1]``), taken down 8x by a
  small convolutional encoder; the residual list is repeated whole until it covers the
  model's 19 double blocks.
- **MistoLine** (XLabs-like, ``controlnet_blocks.N.linear``, ``single_controlnet_blocks``,
  ``input_cond_block``): its own hint encoder, SiLU after each output layer; XLabs' rules.

The trunk is loom-flux's own :class:`~loom_flux.dit.FluxTransformer` without its final layer,
so the module names (and the XLabs file's keys) are Flux's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from loom_flux.convert import Source, config_from_shapes, key_plan
from loom_flux.dit import (
    PATCH,
    FluxConfig,
    FluxTransformer,
    image_ids,
    patchify,
    position_embedding,
    timestep_embedding,
)
from torch import nn

from loom.memory import ops

#: ComfyUI spreads a Flux ControlNet's residuals over Flux.1's block counts, whatever the
#: model's (so a shortened model takes the first ones).
MAIN_DOUBLE_BLOCKS = 19
MAIN_SINGLE_BLOCKS = 38
#: The XLabs hint encoder: eight 3x3 convolutions to 16 channels, three of them stride 2.
XLABS_HINT_CHANNELS = 16
XLABS_STRIDED = (2, 4, 6)
#: MistoLine's hint encoder: (kernel, stride) of its ten convolutions to 16 channels.
MISTOLINE_CONVS = ((3, 1), (1, 1), (3, 1), (3, 2), (3, 1), (3, 2), (3, 1), (3, 2), (1, 1), (3, 1))


@attrs.frozen
class FluxControlNetConfig:
    """A Flux ControlNet: its trunk's :class:`FluxConfig` (``depth`` / ``depth_single`` are
    the ControlNet's own block counts), the hint's width after patchifying, and its kind."""

    dit: FluxConfig
    hint_width: int
    #: InstantX: the hint is a VAE latent (True); XLabs: pixels through ``input_hint_block``
    latent_input: bool
    union_modes: int = 0
    mistoline: bool = False

    @property
    def hint_latent_channels(self) -> int:
        """Latent channels of an InstantX hint (16, or 17 with the mask channel)."""
        return self.hint_width // (PATCH * PATCH)

    @property
    def kind(self) -> str:
        if self.mistoline:
            return "MistoLine"
        return "InstantX" if self.latent_input else "XLabs"


def xlabs_hint_encoder() -> nn.Sequential:
    """RGB -> 16 channels at 1/8 size (conv-SiLU pairs; ``input_hint_block.{0,2,..,14}``)."""
    return _hint_convs(tuple((3, 2 if i in XLABS_STRIDED else 1) for i in range(8)))


def _hint_convs(convs: tuple[tuple[int, int], ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 3
    for i, (kernel, stride) in enumerate(convs):
        layers.append(
            ops.Conv2d(cin, XLABS_HINT_CHANNELS, kernel, padding=kernel // 2, stride=stride)
        )
        if i < len(convs) - 1:
            layers.append(nn.SiLU())
        cin = XLABS_HINT_CHANNELS
    return nn.Sequential(*layers)


class MistolineHintEncoder(nn.Module):
    """MistoLine's RGB -> 16 channels at 1/8 size (``input_cond_block.encoder``)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = _hint_convs(MISTOLINE_CONVS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class MistolineOutput(nn.Module):
    """MistoLine's output layer: ``silu(linear(x))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = ops.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.linear(x))


def _pad_to_patch(x: torch.Tensor) -> torch.Tensor:
    pad_h, pad_w = (-x.shape[-2]) % PATCH, (-x.shape[-1]) % PATCH
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular")
    return x


class FluxControlNet(FluxTransformer):
    """``forward(x, hint, timestep, context, y, guidance, control_type)`` ->
    ``(double residuals, single residuals)``, one per ControlNet block (unscaled, unspread).
    """

    def __init__(self, config: FluxControlNetConfig) -> None:
        super().__init__(config.dit)
        del self.final_layer
        self.control_config = config
        dim = config.dit.hidden_size
        output = MistolineOutput if config.mistoline else (lambda d: ops.Linear(d, d))
        self.controlnet_blocks = nn.ModuleList(output(dim) for _ in range(config.dit.depth))
        self.controlnet_single_blocks = nn.ModuleList(
            output(dim) for _ in range(config.dit.depth_single)
        )
        if config.union_modes:
            self.controlnet_mode_embedder = ops.Embedding(config.union_modes, dim)
        self.pos_embed_input = ops.Linear(config.hint_width, dim)
        if config.mistoline:
            self.input_cond_block = MistolineHintEncoder()
        elif not config.latent_input:
            self.input_hint_block = xlabs_hint_encoder()

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        hint: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        y: torch.Tensor,
        guidance: torch.Tensor | None = None,
        control_type: int | None = None,
    ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """``x``: the model-space latent; ``hint``: a model-space latent (InstantX) or an
        image in ``[0, 1]`` (XLabs), both ``[B, C, H, W]``; ``control_type``: a union file's
        mode (None: no mode token)."""
        config = self.control_config
        b = x.shape[0]
        x = _pad_to_patch(x)
        if config.latent_input:
            hint = _pad_to_patch(hint)
        elif config.mistoline:
            hint = self.input_cond_block(hint * 2.0 - 1.0)
        else:
            hint = self.input_hint_block(hint * 2.0 - 1.0)
        img = self.img_in(patchify(x)) + self.pos_embed_input(patchify(hint))
        dim_t = timestep_embedding(timestep, 256).to(img.dtype)
        vec = self.time_in(dim_t)
        if config.dit.guidance_embed and guidance is not None:
            vec = vec + self.guidance_in(timestep_embedding(guidance, 256).to(img.dtype))
        vec = vec + self.vector_in(y[:, : config.dit.vec_dim].to(img.dtype))
        txt = self.txt_in(context.to(img.dtype))
        txt_ids = torch.zeros(b, txt.shape[1], 3, device=x.device)
        if config.union_modes and control_type is not None:
            mode = self.controlnet_mode_embedder(torch.tensor([control_type], device=x.device))
            txt = torch.cat((mode.to(txt.dtype)[None].expand(b, -1, -1), txt), dim=1)
            txt_ids = torch.cat((txt_ids[:, :1], txt_ids), dim=1)
        ids = torch.cat(
            (txt_ids, image_ids(b, x.shape[-2] // PATCH, x.shape[-1] // PATCH, x.device)), 1
        )
        pe = position_embedding(ids, config.dit.axes_dim, config.dit.theta)
        doubles = []
        for block, out in zip(self.double_blocks, self.controlnet_blocks, strict=True):
            img, txt = block(img, txt, vec, pe)
            doubles.append(out(img))
        joint = torch.cat((txt, img), dim=1)
        singles = []
        for block, out in zip(self.single_blocks, self.controlnet_single_blocks, strict=True):
            joint = block(joint, vec, pe)
            singles.append(out(joint[:, txt.shape[1] :]))
        return tuple(doubles), tuple(singles)


def spread(values: tuple[Any, ...], slots: int, consecutive: bool) -> tuple[Any, ...]:
    """ComfyUI's rule placing ``values`` on ``slots`` model blocks: each repeated
    ``ceil(slots / n)`` times in a row (``consecutive``, InstantX) or the whole list repeated
    (XLabs), cut to ``slots``."""
    if not values:
        return ()
    times = math.ceil(slots / len(values))
    if consecutive:
        out = [value for value in values for _ in range(times)]
    else:
        out = list(values) * times
    return tuple(out[:slots])


# --- reading files ---------------------------------------------------------------------

Shapes = Mapping[str, tuple[int, ...]]


def is_xlabs(shapes: Shapes) -> bool:
    return (
        "controlnet_blocks.0.weight" in shapes
        and "double_blocks.0.img_attn.norm.key_norm.scale" in shapes
    )


def is_mistoline(shapes: Shapes) -> bool:
    return "controlnet_blocks.0.linear.weight" in shapes


def is_instantx(shapes: Shapes) -> bool:
    return "controlnet_blocks.0.weight" in shapes and "controlnet_x_embedder.weight" in shapes


def is_flux_controlnet(shapes: Shapes) -> bool:
    return is_xlabs(shapes) or is_instantx(shapes) or is_mistoline(shapes)


def flux_controlnet_config(shapes: Shapes) -> FluxControlNetConfig:
    """The config of an InstantX or XLabs file, read off its shapes (loom-flux's reader, with
    no final layer: the trunk's output width is its input width)."""
    mistoline = is_mistoline(shapes)
    latent = not (mistoline or is_xlabs(shapes))
    dit = config_from_shapes(shapes, diffusers=latent, final_layer=False)
    hint_key = "controlnet_x_embedder.weight" if latent else "pos_embed_input.weight"
    modes = shapes.get("controlnet_mode_embedder.weight", (0,))[0]
    return FluxControlNetConfig(
        dit, shapes[hint_key][1], latent, union_modes=modes, mistoline=mistoline
    )


def mistoline_file_key(key: str) -> str:
    """A module key's name in a MistoLine file (its single-block outputs are named apart)."""
    return key.replace("controlnet_single_blocks.", "single_controlnet_blocks.", 1)


def instantx_plan(config: FluxControlNetConfig) -> dict[str, Source]:
    """Module key -> the diffusers keys it is made of, for an InstantX file."""
    dit = config.dit
    plan = {
        k: v
        for k, v in key_plan(dit.depth, dit.depth_single, dit.guidance_embed).items()
        if not k.startswith("final_layer.")
    }
    for suffix in ("weight", "bias"):
        plan[f"pos_embed_input.{suffix}"] = Source((f"controlnet_x_embedder.{suffix}",))
        for stem, n in (
            ("controlnet_blocks", dit.depth),
            ("controlnet_single_blocks", dit.depth_single),
        ):
            for i in range(n):
                plan[f"{stem}.{i}.{suffix}"] = Source((f"{stem}.{i}.{suffix}",))
    if config.union_modes:
        plan["controlnet_mode_embedder.weight"] = Source(("controlnet_mode_embedder.weight",))
    return plan


class PlannedView(Mapping[str, Any]):
    """Module-keyed lazy view of a file through a plan (fused tensors concatenated on read)."""

    def __init__(self, source: Mapping[str, Any], plan: Mapping[str, Source]) -> None:
        self.source = source
        self.plan = {k: s for k, s in plan.items() if all(p in source for p in s.keys)}

    def __getitem__(self, key: str) -> Any:
        tensors = [self.source[k] for k in self.plan[key].keys]
        return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=0)

    def __iter__(self) -> Iterator[str]:
        return iter(self.plan)

    def __len__(self) -> int:
        return len(self.plan)

    def used(self) -> set[str]:
        return {k for s in self.plan.values() for k in s.keys}
