"""PhotoMaker v1's ID encoder (``models/photomaker``) and the prompt fusion of PhotoMakerEncode.

The file holds a CLIP ViT-L vision tower with its ``visual_projection`` (768), a second
projection ``visual_projection_2`` (1280, no bias) and the ``fuse_module`` (two MLPs and a
LayerNorm), under ``id_encoder.`` in converted PhotoMaker files (``lora_weights.*`` beside it
are for the UNet and not used, as in ComfyUI) or bare. The ID embedding of a face image is
both projections of the tower's pooled output, concatenated (768 + 1280 = SDXL's 2048-wide
text embeddings); the fuse module mixes it into the embedding of one prompt token:
``mlp2(mlp1([token, id]) + token)`` then LayerNorm, ``mlp1`` without and ``mlp2`` with a
residual, each ``fc2(gelu(fc1(layernorm(x))))``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import nn

from loom.errors import ModelFileError
from loom.memory import LoadPolicy, ModelHandle, build_on_meta, load_into_module
from loom_clip_vision.config import PREFIX, VisionConfig, tower_config
from loom_clip_vision.model import build_tower, materialize_position_ids, module_key
from loom_clip_vision.preprocess import clip_preprocess

ID_ENCODER = "id_encoder."
#: the trigger word PhotoMakerEncode looks for in the prompt (ComfyUI's special token)
TRIGGER = "photomaker"


class FuseMLP(nn.Module):
    """``fc2(gelu(fc1(layernorm(x))))``, plus ``x`` when ``residual``."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, residual: bool) -> None:
        super().__init__()
        self.layernorm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc2(nn.functional.gelu(self.fc1(self.layernorm(x))))
        return out + x if self.residual else out


class FuseModule(nn.Module):
    """Mixes an ID embedding into a prompt token's embedding (both ``dim`` wide)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp1 = FuseMLP(dim * 2, dim, dim, residual=False)
        self.mlp2 = FuseMLP(dim, dim, dim, residual=True)
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, token: torch.Tensor, id_embeds: torch.Tensor) -> torch.Tensor:
        fused = self.mlp1(torch.cat((token, id_embeds), dim=-1)) + token
        return self.layer_norm(self.mlp2(fused))


@attrs.frozen
class PhotoMakerConfig:
    """The tower's config and the widths of the second projection and the fuse module."""

    tower: VisionConfig
    projection_2: int

    @property
    def embed_dim(self) -> int:
        return (self.tower.projection_dim or 0) + self.projection_2


class PhotoMakerIDEncoder(nn.Module):
    """The vision tower, ``visual_projection_2`` and ``fuse_module``."""

    def __init__(self, config: PhotoMakerConfig) -> None:
        super().__init__()
        self.config = config
        self.tower = build_tower(config.tower)
        self.visual_projection_2 = nn.Linear(
            config.tower.hidden_size, config.projection_2, bias=False
        )
        self.fuse_module = FuseModule(config.embed_dim)

    def id_embeds(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, embed_dim]``: both projections of the tower's pooled output."""
        pooled = self.tower.vision_model(pixel_values=pixels).pooler_output
        return torch.cat(
            (self.tower.visual_projection(pooled), self.visual_projection_2(pooled)), -1
        )


def _shapes(state: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(state[key].shape) for key in state}


def encoder_state(state: Mapping[str, Any], file: str) -> dict[str, Any]:
    """The ID encoder's tensors under their own names (``id_encoder.`` stripped)."""
    if any(key.startswith(ID_ENCODER) for key in state):
        return {k[len(ID_ENCODER) :]: state[k] for k in state if k.startswith(ID_ENCODER)}
    if "visual_projection_2.weight" not in state:
        raise ModelFileError(
            f"{file} is not a PhotoMaker file: no {ID_ENCODER}visual_projection_2.weight",
            hint="models/photomaker holds PhotoMaker v1 files (photomaker-v1) as safetensors",
        )
    return dict(state)


def photomaker_config(shapes: Mapping[str, tuple[int, ...]], file: str) -> PhotoMakerConfig:
    """Widths from the encoder's shapes.

    :raises ModelFileError: parts missing (PhotoMaker v2's ``qformer_perceiver`` is refused
        by name: ComfyUI 0.8 loads v1 only).
    """
    if any(key.startswith("qformer_perceiver.") for key in shapes):
        raise ModelFileError(
            f"{file} is a PhotoMaker v2 file (qformer_perceiver); ComfyUI's PhotoMakerLoader "
            "and Loom load PhotoMaker v1 only"
        )
    second = shapes.get("visual_projection_2.weight")
    if second is None or "fuse_module.layer_norm.weight" not in shapes:
        raise ModelFileError(
            f"{file} is not a PhotoMaker v1 ID encoder (no visual_projection_2 / fuse_module)"
        )
    tower = tower_config(shapes, file)
    config = PhotoMakerConfig(tower, second[0])
    fuse = shapes["fuse_module.layer_norm.weight"][0]
    if tower.projection_dim is None or fuse != config.embed_dim:
        raise ModelFileError(
            f"{file}: the fuse module is {fuse} wide but the projections give {config.embed_dim}"
        )
    return config


def load_photomaker(state: Mapping[str, Any], file: str) -> ModelHandle:
    """The ID encoder of a PhotoMaker file's tensors, as a model handle."""
    weights = encoder_state(state, file)
    config = photomaker_config(_shapes(weights), file)
    module = build_on_meta(PhotoMakerIDEncoder, config)
    named = {}
    for key, value in weights.items():
        if key.startswith(PREFIX) or key == "visual_projection.weight":
            named["tower." + module_key(module.tower, key)] = value
        else:
            named[key] = value
    load_into_module(module, named, LoadPolicy(missing="error", unexpected="error"), source=file)
    materialize_position_ids(module.tower)
    return ModelHandle(module.eval(), name=f"photomaker:{file}")


def trigger_position(text: str) -> int | None:
    """The prompt position of the class token PhotoMaker fuses, or None without the trigger.

    As ComfyUI: the trigger's word number in ``text.split(" ")`` (1-based) less one, read as
    a token position (the start token is position 0, so with one token per word this is the
    word before the trigger: "a man photomaker" -> "man").
    """
    words = text.split(" ")
    return words.index(TRIGGER) if TRIGGER in words else None


def trigger_word_id(text: str) -> int:
    """The word id whose tokens ComfyUI's PhotoMakerEncode removes: the trigger's word number
    in ``text.split(" ")`` (1-based), -1 without the trigger.

    ComfyUI compares it with its tokenizer's word ids, which number token groups (each
    weighted segment or embedding, from 1), not space-separated words: the tokens removed
    are those of the group with that number, if there is one. A plain prompt is a single
    group, so "photograph of photomaker" keeps its trigger; "(a) (b) photomaker" (groups
    "a", " ", "b", " photomaker") loses "b".
    """
    words = text.split(" ")
    return words.index(TRIGGER) + 1 if TRIGGER in words else -1


@torch.inference_mode()
def fuse_prompt(
    handle: ModelHandle, image: torch.Tensor, cond: torch.Tensor, position: int
) -> torch.Tensor:
    """``cond`` (``[B, T, D]``) with token ``position`` fused with the first image's ID
    embedding (ComfyUI uses one ID image: the first of the batch)."""
    module: PhotoMakerIDEncoder = handle.module  # type: ignore[assignment]
    tower = module.config.tower
    target = handle.compute_target
    pixels = clip_preprocess(image[:1], tower.image_size, tower.image_mean, tower.image_std)
    ids = module.id_embeds(pixels.to(target.device, target.dtype))
    token = cond[:, position].to(target.device, target.dtype)
    fused = module.fuse_module(token, ids.expand(token.shape[0], -1))
    out = cond.clone()
    out[:, position] = fused.to(out)
    return out
