"""The CLIP_VISION socket value: a vision tower handle that encodes images.

The tower is transformers' ``CLIPVisionModelWithProjection`` (``CLIPVisionModel`` for a file
without ``visual_projection``) or ``SiglipVisionModel``, built on the meta device from the
config the weights give (:mod:`loom_clip_vision.config`), its layers switched to
:data:`loom.memory.ops` (weights stay in their stored dtype) and the file's tensors assigned.
:meth:`ClipVision.encode_image` is ComfyUI's ``encode_image``: what it returns as
CLIP_VISION_OUTPUT is :class:`ClipVisionOutput`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from loom.memory import (
    LoadPolicy,
    MemoryManager,
    ModelHandle,
    build_on_meta,
    cpu_device,
    load_into_module,
    open_safetensors,
    ops,
)
from loom.types import CheckpointHeader
from loom_clip_vision.config import PREFIX, VisionConfig, vision_config
from loom_clip_vision.openclip import converted_tensors, is_openclip, openclip_plan
from loom_clip_vision.preprocess import clip_preprocess

log = logging.getLogger(__name__)

_OPS = {
    nn.Linear: ops.Linear,
    nn.LayerNorm: ops.LayerNorm,
    nn.Embedding: ops.Embedding,
    nn.Conv2d: ops.Conv2d,
}


@attrs.frozen
class ClipVisionOutput:
    """CLIP_VISION_OUTPUT: what ComfyUI's ``encode_image`` returns, on the CPU.

    Readable as attributes or by key (``output["image_embeds"]``), as custom nodes do.
    """

    #: The last layer's hidden states ``[B, T, D]`` (CLIP: before ``post_layernorm``;
    #: SigLIP: after it, every token).
    last_hidden_state: torch.Tensor
    #: CLIP: the projected pooled class token ``[B, P]``; SigLIP: ``last_hidden_state``.
    image_embeds: torch.Tensor
    #: The second-to-last layer's output ``[B, T, D]`` (no norm).
    penultimate_hidden_states: torch.Tensor
    #: ``[C, H, W]`` of the pixel values, one per image.
    image_sizes: list[tuple[int, ...]]
    #: SigLIP only: every layer's output ``[B, layers, T, D]`` (ComfyUI gives it for SigLIP).
    all_hidden_states: torch.Tensor | None = None

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError as exc:
            raise KeyError(key) from exc

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and getattr(self, key, None) is not None


def build_tower(config: VisionConfig) -> nn.Module:
    """The transformers model for ``config`` with casting layers (call under meta)."""
    from transformers import CLIPVisionModel, CLIPVisionModelWithProjection, SiglipVisionModel

    if config.kind == "siglip":
        cls: Any = SiglipVisionModel
    elif config.projection_dim:
        cls = CLIPVisionModelWithProjection
    else:
        cls = CLIPVisionModel
    model = cls(config.to_transformers())
    for module in model.modules():
        cast = _OPS.get(type(module))
        if cast is not None:
            module.__class__ = cast
    return model.eval()


def _tower(model: nn.Module) -> nn.Module:
    """The module holding ``embeddings`` / ``encoder`` (transformers 5's SigLIP is flat)."""
    return getattr(model, "vision_model", model)


def module_key(model: nn.Module, file_key: str) -> str:
    """The module's key for a file key: the file's ``vision_model.`` prefix is the
    module's own unless the tower is flat (``SiglipVisionModel`` in transformers 5)."""
    if _tower(model) is model and file_key.startswith(PREFIX):
        return file_key[len(PREFIX) :]
    return file_key


def materialize_position_ids(model: nn.Module) -> None:
    """``position_ids`` is not in the files: rebuild it where it is still on meta."""
    embeddings = _tower(model).embeddings
    if embeddings.position_ids.is_meta:
        count = embeddings.position_embedding.weight.shape[0]
        embeddings.position_ids = torch.arange(count).expand((1, -1))


def _tower_keys(header: CheckpointHeader) -> list[str]:
    # SigLIP files may carry the attention-pooling head ComfyUI never runs.
    return [
        key
        for key in header.tensors
        if (key.startswith(PREFIX) and not key.startswith(f"{PREFIX}head."))
        or key == "visual_projection.weight"
    ]


class ClipVision:
    """The CLIP_VISION socket value: the tower's handle, its config and the source file."""

    def __init__(
        self,
        handle: ModelHandle,
        config: VisionConfig,
        path: Path,
        memory: MemoryManager | None = None,
    ) -> None:
        self.handle = handle
        self.config = config
        self.path = path
        # Without a runtime's manager, a CPU one: the same load path as under a runtime.
        self.memory = memory if memory is not None else MemoryManager(cpu_device())
        #: ComfyUI writes a CLIP vision tower into an SD-family checkpoint under no prefix
        #: (ImageOnlyCheckpointSave), keyed as its own file.
        self.checkpoint_prefix = ""

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The tower's weights, patches applied, keyed as in a ``clip_vision`` file
        (``vision_model.*`` and ``visual_projection.weight``; no ``position_ids``)."""
        from loom.memory import patched_tensors

        model = self.handle.module
        flat = _tower(model) is model
        return {
            (PREFIX + key if flat else key): value
            for key, value in patched_tensors(self.handle).items()
            if not key.endswith("position_ids")
        }

    @torch.inference_mode()
    def encode_image(self, image: torch.Tensor, crop: bool = True) -> ClipVisionOutput:
        """Encode IMAGE ``[B, H, W, C]``: preprocess as ComfyUI does, run the tower."""
        config = self.config
        pixels = clip_preprocess(
            image, config.image_size, config.image_mean, config.image_std, crop=crop
        )
        self.memory.load([self.handle])
        target = self.handle.compute_target
        out = self.handle.module(
            pixel_values=pixels.to(target.device, target.dtype), output_hidden_states=True
        )
        hidden = out.hidden_states
        last = out.last_hidden_state.float().cpu()
        if config.kind == "siglip":
            embeds = last
            every = torch.stack(hidden[1:], dim=1).float().cpu()
        else:
            embeds = getattr(out, "image_embeds", None)
            embeds = (embeds if embeds is not None else out.pooler_output).float().cpu()
            every = None
        return ClipVisionOutput(
            last_hidden_state=last,
            image_embeds=embeds,
            penultimate_hidden_states=hidden[-2].float().cpu(),
            image_sizes=[tuple(pixels.shape[1:])] * pixels.shape[0],
            all_hidden_states=every,
        )


def load_clip_vision(header: CheckpointHeader, memory: MemoryManager | None = None) -> ClipVision:
    """Load the vision tower in ``header``'s file.

    :raises ModelFileError: not a vision tower Loom reads, or tensors of the wrong shape.
    """
    config = vision_config(header)
    tensors = open_safetensors(header.path)
    tower = build_on_meta(build_tower, config)
    if is_openclip(header.tensors):
        renamed = converted_tensors(tensors, openclip_plan(header.tensors))
        state = {module_key(tower, key): value for key, value in renamed.items()}
    else:
        state = {module_key(tower, key): tensors[key] for key in _tower_keys(header)}
    load_into_module(tower, state, LoadPolicy(), source=header.path.name)
    materialize_position_ids(tower)
    handle = ModelHandle(tower, name=f"clip-vision-{config.kind}")
    log.info(
        "CLIP vision %s: %s, %d layers, %d wide, %dpx",
        header.path.name,
        config.kind,
        config.num_layers,
        config.hidden_size,
        config.image_size,
    )
    return ClipVision(handle, config, header.path, memory)
