"""ComfyUI's CLIP vision, unCLIP and style-model nodes, with its inputs, defaults and
categories: ``CLIPVisionLoader``, ``CLIPVisionEncode``, ``unCLIPConditioning``,
``unCLIPCheckpointLoader``, ``StyleModelLoader`` and ``StyleModelApply``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import loom
from loom.errors import ModelFileError, NodeInputError
from loom.folders import ModelFileChoices
from loom.types import Clip, Conditioning, Image, Model, Socket, Vae

ClipVisionRef = Annotated[Any, Socket("CLIP_VISION")]
ClipVisionOutputRef = Annotated[Any, Socket("CLIP_VISION_OUTPUT")]
StyleModelRef = Annotated[Any, Socket("STYLE_MODEL")]

COMFY_MODULE = "nodes"
#: StyleModelApply's ``strength_type`` choices (ComfyUI 0.8).
STRENGTH_TYPES = ["multiply", "attn_bias"]
_NEEDS = "model folders"


#: The ``clip_name`` combo: files in the ``clip_vision`` model folder (live).
clip_vision_files = ModelFileChoices("clip_vision")
#: The ``style_model_name`` combo: files in the ``style_models`` model folder (live).
style_model_files = ModelFileChoices("style_models")
#: The ``ckpt_name`` combo: files in the ``checkpoints`` model folder (live).
checkpoint_files = ModelFileChoices("checkpoints")


def resolve(ctx: loom.RunContext, key: str, filename: str) -> Path:
    """The path of ``filename`` in model folder ``key`` (ComfyUI's message when absent)."""
    return ctx.require_runtime(_NEEDS).folders.require(key, filename)


def _memory(ctx: loom.RunContext) -> Any:
    return ctx.runtime.memory if ctx.runtime is not None else None


@loom.node("CLIPVisionLoader", category="loaders", display_name="Load CLIP Vision")
class CLIPVisionLoader:
    clip_name: str = loom.ui.combo(clip_vision_files)

    def run(self, ctx: loom.RunContext) -> ClipVisionRef:
        from loom.memory import read_header
        from loom_clip_vision.model import load_clip_vision

        path = resolve(ctx, "clip_vision", self.clip_name)
        try:
            return load_clip_vision(read_header(path), _memory(ctx))
        except ModelFileError as exc:
            raise ModelFileError(
                f"CLIPVisionLoader: input 'clip_name': {exc.message}", hint=exc.hint
            ) from exc


@loom.node("CLIPVisionEncode", category="conditioning", display_name="CLIP Vision Encode")
class CLIPVisionEncode:
    clip_vision: ClipVisionRef
    image: Image
    crop: str = loom.ui.combo(["center", "none"])

    def run(self, ctx: loom.RunContext) -> ClipVisionOutputRef:
        if self.clip_vision is None:
            raise NodeInputError(
                "CLIPVisionEncode",
                "clip_vision",
                "input clip_vision is empty: the node that made it found no CLIP vision model "
                "(unCLIPCheckpointLoader on a checkpoint without one)",
                hint="load one with CLIPVisionLoader",
            )
        return self.clip_vision.encode_image(self.image, crop=self.crop == "center")


@loom.node("unCLIPConditioning", category="conditioning")
class unCLIPConditioning:
    conditioning: Conditioning
    clip_vision_output: ClipVisionOutputRef
    strength: float = loom.ui.float(1.0, min=-10.0, max=10.0, step=0.01)
    noise_augmentation: float = loom.ui.float(0.0, min=0.0, max=1.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Conditioning:
        from loom_clip_vision.unclip import add_unclip

        return add_unclip(
            self.conditioning, self.clip_vision_output, self.strength, self.noise_augmentation
        )


@loom.outputs
class UnclipCheckpointParts:
    model: Model = loom.output(name="MODEL")
    clip: Clip = loom.output(name="CLIP")
    vae: Vae = loom.output(name="VAE")
    clip_vision: ClipVisionRef = loom.output(name="CLIP_VISION")


@loom.node("unCLIPCheckpointLoader", category="loaders")
class unCLIPCheckpointLoader:
    ckpt_name: str = loom.ui.combo(checkpoint_files)

    def run(self, ctx: loom.RunContext) -> UnclipCheckpointParts:
        from loom_clip_vision.unclip import load_unclip_checkpoint

        path = resolve(ctx, "checkpoints", self.ckpt_name)
        parts = load_unclip_checkpoint(ctx.require_runtime("model families"), path)
        return UnclipCheckpointParts(
            model=parts.model, clip=parts.clip, vae=parts.vae, clip_vision=None
        )


@loom.node("StyleModelLoader", category="loaders", display_name="Load Style Model")
class StyleModelLoader:
    style_model_name: str = loom.ui.combo(style_model_files)

    def run(self, ctx: loom.RunContext) -> StyleModelRef:
        from loom.memory import read_header
        from loom_clip_vision.style import load_style_model

        path = resolve(ctx, "style_models", self.style_model_name)
        return load_style_model(read_header(path), _memory(ctx))


@loom.node("StyleModelApply", category="conditioning/style_model", display_name="Apply Style Model")
class StyleModelApply:
    conditioning: Conditioning
    style_model: StyleModelRef
    clip_vision_output: ClipVisionOutputRef
    strength: float = loom.ui.float(1.0, min=0.0, max=10.0, step=0.001)
    strength_type: str = loom.ui.combo(STRENGTH_TYPES)

    def run(self, ctx: loom.RunContext) -> Conditioning:
        from loom_clip_vision.style import apply_style

        tokens = self.style_model.get_cond(self.clip_vision_output)
        return apply_style(
            self.conditioning,
            tokens,
            self.strength,
            self.strength_type,
            source=f"style model {self.style_model.path.name}",
        )


NODES: tuple[type, ...] = (
    CLIPVisionLoader,
    CLIPVisionEncode,
    unCLIPConditioning,
    unCLIPCheckpointLoader,
    StyleModelLoader,
    StyleModelApply,
)
