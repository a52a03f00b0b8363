"""Flux USO's style projector (a ``model_patches`` file) and the text-token prefix it makes.

The file (``feature_embedder.*``) holds three branches, one per SigLIP layer (-20, -11 and
the penultimate): each mixes the 729 image tokens down to ``style_tokens`` (Linear over the
token axis + SiLU), normalises (LayerNorm, when present) and projects to the DiT's width.
``USOStyleReference`` puts the three results (high, mid, low) in front of the DiT's text
tokens right after ``txt_in``, with text position ids of zero, as ComfyUI's
``UsoStyleProjectorPatch`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import nn

from loom.errors import ModelFileError
from loom.memory import LoadPolicy, build_on_meta, load_into_module

PREFIX = "feature_embedder."
BRANCHES = ("high", "mid", "low")
#: the SigLIP hidden states each branch reads, in ``BRANCHES`` order (penultimate = -2)
SIGLIP_LAYERS = (-2, -11, -20)
#: keys that name another model patch ComfyUI's ModelPatchLoader knows, and its family
OTHER_PATCHES = {
    "controlnet_blocks.0.y_rms.weight": "a Qwen-Image DiffSynth block-wise ControlNet",
    "control_all_x_embedder.2-1.weight": "a Z-Image Fun ControlNet",
}


@attrs.frozen
class ProjectorConfig:
    """Widths of a USO style projector, read from its weights."""

    siglip_tokens: int
    style_tokens: int
    siglip_dim: int
    hidden_size: int
    layer_norm: bool


class USOProjector(nn.Module):
    """SigLIP hidden states of three layers -> ``3 * style_tokens`` DiT-width tokens."""

    def __init__(self, config: ProjectorConfig) -> None:
        super().__init__()
        self.config = config
        for branch in BRANCHES:
            mix = nn.Sequential(nn.Linear(config.siglip_tokens, config.style_tokens), nn.SiLU())
            norm = nn.LayerNorm(config.siglip_dim) if config.layer_norm else nn.Identity()
            setattr(self, f"{branch}_embedding_linear", mix)
            setattr(self, f"{branch}_layer_norm", norm)
            setattr(self, f"{branch}_projection", nn.Linear(config.siglip_dim, config.hidden_size))

    def forward(self, layers: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """``layers``: the ``[B, T, D]`` states of layers -2, -11 and -20."""
        out = []
        for branch, states in zip(BRANCHES, layers, strict=True):
            mixed = getattr(self, f"{branch}_embedding_linear")(states.transpose(1, 2))
            normed = getattr(self, f"{branch}_layer_norm")(mixed.transpose(1, 2))
            out.append(getattr(self, f"{branch}_projection")(normed))
        return torch.cat(out, dim=1)


def projector_config(shapes: Mapping[str, tuple[int, ...]], file: str) -> ProjectorConfig:
    """The projector's widths from a ``model_patches`` file's shapes.

    :raises ModelFileError: another kind of model patch (named), or not a model patch.
    """
    for key, what in OTHER_PATCHES.items():
        if key in shapes:
            raise ModelFileError(
                f"{file} is {what}, a model patch for another model family; Loom loads only "
                "Flux USO style projectors from model_patches"
            )
    mix = shapes.get(f"{PREFIX}high_embedding_linear.0.weight")
    projection = shapes.get(f"{PREFIX}high_projection.weight")
    if mix is None or projection is None:
        raise ModelFileError(
            f"{file} is not a model patch Loom knows (no {PREFIX}high_embedding_linear.0.weight)",
            hint="model_patches holds Flux USO style projectors (uso-flux1-projector-v1)",
        )
    return ProjectorConfig(
        siglip_tokens=mix[1],
        style_tokens=mix[0],
        siglip_dim=projection[1],
        hidden_size=projection[0],
        layer_norm=f"{PREFIX}high_layer_norm.weight" in shapes,
    )


def load_projector(state: Mapping[str, Any], file: str) -> USOProjector:
    """A USO projector built from ``state`` (a ``model_patches`` file's tensors)."""
    shapes = {key: tuple(state[key].shape) for key in state}
    module = build_on_meta(USOProjector, projector_config(shapes, file))
    weights = {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}
    load_into_module(module, weights, LoadPolicy(missing="error", unexpected="error"), source=file)
    return module.eval()


@attrs.define(eq=False)
class USOStyleTokens:
    """The text-token prefix of a Flux model patched by ``USOStyleReference``: the projector
    run on one CLIP vision output's SigLIP states (computed once per device and dtype; its
    input never changes)."""

    projector: USOProjector
    file: str
    states: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    _cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = attrs.field(factory=dict)

    def tokens(self, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``[batch, 3 * style_tokens, hidden]`` tokens (one image's repeated to the batch)."""
        key = (torch.device(device), dtype)
        if key not in self._cache:
            # computed in the file's dtype on the DiT's device (the projector is ~11M weights)
            weight_dtype = next(self.projector.parameters()).dtype
            with torch.inference_mode():
                self.projector.to(device)
                layers = tuple(s.to(device, weight_dtype) for s in self.states)
                self._cache[key] = self.projector(layers).to(dtype)  # type: ignore[arg-type]
        tokens = self._cache[key]
        if tokens.shape[0] == batch:
            return tokens
        if tokens.shape[0] != 1 and batch % tokens.shape[0] != 0:
            raise ModelFileError(
                f"USOStyleReference: input 'clip_vision_output' holds {tokens.shape[0]} images "
                f"but the model is sampled in batches of {batch} ({self.file})",
                hint="encode one style image, or one per latent in the batch",
            )
        return tokens.repeat(batch // tokens.shape[0], 1, 1)


def siglip_layers(output: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The states USO reads from a CLIP_VISION_OUTPUT: layers -2 (penultimate), -11, -20.

    :raises ModelFileError: the output has no per-layer states (not a SigLIP tower's) or too
        few layers.
    """
    every = getattr(output, "all_hidden_states", None)
    if every is None or every.shape[1] < -min(SIGLIP_LAYERS):
        layers = "none" if every is None else str(every.shape[1])
        raise ModelFileError(
            "USOStyleReference: input 'clip_vision_output' needs a SigLIP encoder's per-layer "
            f"states (20 layers or more; it has {layers})",
            hint="encode the style image with the SigLIP CLIP vision model USO uses "
            "(sigclip_vision_patch14_384)",
        )
    return (output.penultimate_hidden_states, every[:, -11], every[:, -20])
