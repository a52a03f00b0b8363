"""OpenCLIP's image-tower layout (``visual.transformer.resblocks.*``), renamed to
transformers' ``vision_model.*`` as ComfyUI's CLIPVisionLoader does for such files.

:func:`openclip_plan` maps every transformers key to the OpenCLIP key it comes from and how
(as stored, transposed, or one third of a fused ``in_proj``); shapes and tensors go through
the same plan, so detection reads only the header.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

SOURCE = "visual."
TARGET = "vision_model."
MARKER = f"{SOURCE}transformer.resblocks.0.attn.in_proj_weight"

_TOP = {
    "class_embedding": "embeddings.class_embedding",
    "conv1.weight": "embeddings.patch_embedding.weight",
    "positional_embedding": "embeddings.position_embedding.weight",
    "ln_pre.weight": "pre_layrnorm.weight",
    "ln_pre.bias": "pre_layrnorm.bias",
    "ln_post.weight": "post_layernorm.weight",
    "ln_post.bias": "post_layernorm.bias",
}
_LAYER = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
    "attn.out_proj": "self_attn.out_proj",
}


@attrs.frozen
class Source:
    """Where one transformers tensor comes from: ``key``, transposed, or third ``part``."""

    key: str
    transpose: bool = False
    part: int | None = None  # 0, 1, 2: q, k, v of a fused in_proj


def is_openclip(keys: Any) -> bool:
    return MARKER in keys


def openclip_plan(keys: Any) -> dict[str, Source]:
    """transformers key -> :class:`Source` for every tensor of the OpenCLIP tower in ``keys``."""
    plan = {f"{TARGET}{new}": Source(f"{SOURCE}{old}") for old, new in _TOP.items()}
    if f"{SOURCE}proj" in keys:
        plan["visual_projection.weight"] = Source(f"{SOURCE}proj", transpose=True)
    layer = 0
    while f"{SOURCE}transformer.resblocks.{layer}.attn.in_proj_weight" in keys:
        old = f"{SOURCE}transformer.resblocks.{layer}."
        new = f"{TARGET}encoder.layers.{layer}."
        for a, b in _LAYER.items():
            for kind in ("weight", "bias"):
                plan[f"{new}{b}.{kind}"] = Source(f"{old}{a}.{kind}")
        for part, name in enumerate(("q_proj", "k_proj", "v_proj")):
            plan[f"{new}self_attn.{name}.weight"] = Source(f"{old}attn.in_proj_weight", part=part)
            plan[f"{new}self_attn.{name}.bias"] = Source(f"{old}attn.in_proj_bias", part=part)
        layer += 1
    return {k: v for k, v in plan.items() if v.key in keys}


def converted_shapes(
    shapes: Mapping[str, tuple[int, ...]], plan: Mapping[str, Source]
) -> dict[str, tuple[int, ...]]:
    out = {}
    for key, source in plan.items():
        shape = shapes[source.key]
        if source.transpose:
            shape = shape[::-1]
        if source.part is not None:
            shape = (shape[0] // 3, *shape[1:])
        out[key] = tuple(shape)
    return out


def converted_tensors(tensors: Mapping[str, Any], plan: Mapping[str, Source]) -> dict[str, Any]:
    out = {}
    for key, source in plan.items():
        tensor = tensors[source.key]
        if source.transpose:
            tensor = tensor.t().contiguous()
        if source.part is not None:
            tensor = tensor.chunk(3, dim=0)[source.part].contiguous()
        out[key] = tensor
    return out
