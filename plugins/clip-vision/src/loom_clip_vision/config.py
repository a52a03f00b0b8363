"""What a CLIP vision file is, read off its safetensors header (no tensor is loaded).

ComfyUI's ``models/clip_vision/`` files are transformers' vision towers under
``vision_model.*`` (OpenCLIP's ``visual.*`` layout is renamed to it first) (plus ``visual_projection.weight`` for CLIP): ``clip_vision_g``
(ViT-bigG, 48 layers), ``clip_vision_h`` (ViT-H, 32 layers), ``clip_vision_l`` / ViT-L-336
(24 layers) and SigLIP (``sigclip_vision_patch14_384``, Flux Redux's encoder: no class
token, a patch-embedding bias, 1152 wide). ComfyUI picks a fixed config by the layer count;
Loom reads every width from the shapes, so the same rules load toy-width test files, and
takes from ComfyUI what the weights cannot tell: 16 attention heads in every tower, the
activation (``quick_gelu`` for ViT-L, ``gelu`` for ViT-H and bigG, tanh-GELU for SigLIP),
LayerNorm eps 1e-5 everywhere (ComfyUI's default, also for SigLIP), the input resolution
and the normalisation constants.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from loom.errors import ModelFileError
from loom.types import CheckpointHeader

PREFIX = "vision_model."
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
#: ComfyUI's towers all use 16 heads (ViT-L 1024/16, ViT-H 1280/16, bigG 1664/16, SigLIP 1152/16).
NUM_HEADS = 16
#: SigLIP input sizes where the patch grid does not tile the image exactly
#: (position count, patch size) -> image size.
SIGLIP_IMAGE_SIZES = {(729, 14): 384, (1024, 16): 512}
#: CLIP layer counts ComfyUI runs with plain GELU (ViT-H, ViT-bigG); others use quick-GELU.
GELU_DEPTHS = (32, 48)

Kind = Literal["clip", "siglip"]


@attrs.frozen
class VisionConfig:
    """A vision tower's shape and its preprocessing, as detected from the weights."""

    kind: Kind
    hidden_size: int
    intermediate_size: int
    num_layers: int
    patch_size: int
    image_size: int
    #: ``visual_projection`` output width; None when the file has none (SigLIP).
    projection_dim: int | None
    hidden_act: str
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    num_heads: int = NUM_HEADS
    layer_norm_eps: float = 1e-5

    def to_transformers(self) -> Any:
        """The ``CLIPVisionConfig`` / ``SiglipVisionConfig`` of this tower."""
        from transformers import CLIPVisionConfig, SiglipVisionConfig

        common = dict(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_channels=3,
            image_size=self.image_size,
            patch_size=self.patch_size,
            hidden_act=self.hidden_act,
            layer_norm_eps=self.layer_norm_eps,
        )
        if self.kind == "siglip":
            config = SiglipVisionConfig(**common, vision_use_head=False)
        else:
            config = CLIPVisionConfig(**common, projection_dim=self.projection_dim or 0)
        config._attn_implementation = "sdpa"
        return config


def shapes_of(header: CheckpointHeader) -> dict[str, tuple[int, ...]]:
    return {key: tuple(info.shape) for key, info in header.tensors.items()}


def is_vision_tower(shapes: Mapping[str, tuple[int, ...]]) -> bool:
    """The file holds a transformers-layout vision tower."""
    return (
        f"{PREFIX}embeddings.patch_embedding.weight" in shapes
        and f"{PREFIX}encoder.layers.0.layer_norm1.weight" in shapes
    )


def vision_shapes(header: CheckpointHeader) -> dict[str, tuple[int, ...]]:
    """The tower's tensor shapes under transformers' names (an OpenCLIP file renamed)."""
    from loom_clip_vision.openclip import converted_shapes, is_openclip, openclip_plan

    shapes = shapes_of(header)
    if is_openclip(shapes):
        return converted_shapes(shapes, openclip_plan(shapes))
    return shapes


def vision_config(header: CheckpointHeader) -> VisionConfig:
    """Detect the tower in ``header``.

    :raises ModelFileError: the file is not a vision tower in a layout Loom reads.
    """
    return tower_config(vision_shapes(header), header.path.name)


def tower_config(shapes: Mapping[str, tuple[int, ...]], file: str) -> VisionConfig:
    """Detect the tower from transformers-layout ``shapes`` of ``file``.

    :raises ModelFileError: the shapes hold no vision tower in a layout Loom reads.
    """
    if not is_vision_tower(shapes):
        raise ModelFileError(
            f"{file} is not a CLIP vision model in a layout Loom reads",
            hint=_layout_hint(shapes),
        )
    patch = shapes[f"{PREFIX}embeddings.patch_embedding.weight"]
    fc1 = shapes[f"{PREFIX}encoder.layers.0.mlp.fc1.weight"]
    positions = shapes[f"{PREFIX}embeddings.position_embedding.weight"][0]
    layers = 0
    while f"{PREFIX}encoder.layers.{layers}.layer_norm1.weight" in shapes:
        layers += 1
    siglip = f"{PREFIX}embeddings.class_embedding" not in shapes
    patch_size = patch[-1]
    side = math.isqrt(positions - (0 if siglip else 1))
    if siglip:
        image_size = SIGLIP_IMAGE_SIZES.get((positions, patch_size), side * patch_size)
        act, mean, std = "gelu_pytorch_tanh", SIGLIP_MEAN, SIGLIP_STD
    else:
        image_size = side * patch_size
        act = "gelu" if layers in GELU_DEPTHS else "quick_gelu"
        mean, std = CLIP_MEAN, CLIP_STD
    projection = shapes.get("visual_projection.weight")
    hidden = patch[0]
    if hidden % NUM_HEADS:
        raise ModelFileError(
            f"{file}: a {hidden}-wide vision tower does not split into {NUM_HEADS} attention heads",
            hint="CLIP vision files have 16 heads (ViT-L, ViT-H, ViT-bigG, SigLIP)",
        )
    return VisionConfig(
        kind="siglip" if siglip else "clip",
        hidden_size=hidden,
        intermediate_size=fc1[0],
        num_layers=layers,
        patch_size=patch_size,
        image_size=image_size,
        projection_dim=None if projection is None or siglip else projection[0],
        hidden_act=act,
        image_mean=mean,
        image_std=std,
    )


def _layout_hint(shapes: Mapping[str, tuple[int, ...]]) -> str:
    if any(k.startswith(("redux_", "style_embedding")) for k in shapes):
        return (
            "this looks like a style model: put it in models/style_models and use StyleModelLoader"
        )
    if any(".diffusion_model." in k or k.startswith("model.diffusion_model.") for k in shapes):
        return "this looks like a checkpoint: load it with a checkpoint loader"
    return (
        "expected transformers' vision_model.embeddings.patch_embedding.weight and "
        "vision_model.encoder.layers.N.* keys (clip_vision_l/h/g, sigclip_vision_patch14_384) "
        "or OpenCLIP's visual.transformer.resblocks.N.*"
    )
