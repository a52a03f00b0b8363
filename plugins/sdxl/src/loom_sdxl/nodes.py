"""Nodes this plugin adds: ComfyUI's ``CLIPTextEncodeSDXL`` and ``CLIPTextEncodeSDXLRefiner``.

Both attach size fields to the conditioning (the model turns them into the ADM vector, see
:mod:`loom_sdxl.model`); given a CLIP that is not SDXL's they say so instead of failing later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import loom
from loom.errors import LoomError
from loom.types import Clip, Conditioning

if TYPE_CHECKING:
    from loom_sdxl.clip import SDXLClip

COMFY_MODULE = "comfy_extras.nodes_clip_sdxl"
#: ComfyUI's largest image side (``nodes.MAX_RESOLUTION``).
MAX_RESOLUTION = 16384


def _sdxl_clip(node: str, clip: Any, refiner: bool) -> SDXLClip:
    from loom_sdxl.clip import SDXLClip

    what = "an SDXL refiner's CLIP (OpenCLIP bigG)" if refiner else "an SDXL base CLIP"
    if clip is None:
        raise LoomError(f"{node}: input 'clip' is empty", hint=f"connect {what}")
    if not isinstance(clip, SDXLClip):
        name = getattr(getattr(clip, "handle", None), "name", type(clip).__name__)
        raise LoomError(
            f"{node}: input 'clip' is not an SDXL text encoder ({name})",
            hint=f"{node} needs {what}; for other models use CLIPTextEncode",
        )
    if refiner and not clip.is_refiner:
        raise LoomError(
            f"{node}: input 'clip' is an SDXL base CLIP ({clip.handle.name}), not a refiner's",
            hint="use CLIPTextEncodeSDXL with the base CLIP, or connect the refiner's CLIP",
        )
    if not refiner and clip.is_refiner:
        raise LoomError(
            f"{node}: input 'clip' is an SDXL refiner's CLIP ({clip.handle.name}), which has no "
            "CLIP-L for text_l",
            hint="use CLIPTextEncodeSDXLRefiner with a refiner, or connect the base CLIP",
        )
    return clip


def _size(default: int) -> Any:
    return loom.ui.int(default, min=0, max=MAX_RESOLUTION)


@loom.node("CLIPTextEncodeSDXL", category="advanced/conditioning", v3=True)
class CLIPTextEncodeSDXL:
    clip: Clip
    width: int = _size(1024)
    height: int = _size(1024)
    crop_w: int = _size(0)
    crop_h: int = _size(0)
    target_width: int = _size(1024)
    target_height: int = _size(1024)
    text_g: str = loom.ui.string(None, multiline=True, dynamic_prompts=True)
    text_l: str = loom.ui.string(None, multiline=True, dynamic_prompts=True)

    def run(self, ctx: loom.RunContext) -> Conditioning:
        from loom.hooks import encode_scheduled

        return encode_scheduled(self.clip, self._encode)

    def _encode(self, handle: Any) -> Conditioning:
        clip = _sdxl_clip("CLIPTextEncodeSDXL", handle, refiner=False)
        cond, pooled = clip.encode_from_tokens(clip.tokenize_pair(self.text_g, self.text_l))
        options = {
            "pooled_output": pooled,
            "width": self.width,
            "height": self.height,
            "crop_w": self.crop_w,
            "crop_h": self.crop_h,
            "target_width": self.target_width,
            "target_height": self.target_height,
        }
        return [[cond, options]]


@loom.node("CLIPTextEncodeSDXLRefiner", category="advanced/conditioning", v3=True)
class CLIPTextEncodeSDXLRefiner:
    ascore: float = loom.ui.float(6.0, min=0.0, max=1000.0, step=0.01)
    width: int = _size(1024)
    height: int = _size(1024)
    text: str = loom.ui.string(None, multiline=True, dynamic_prompts=True)
    clip: Clip

    def run(self, ctx: loom.RunContext) -> Conditioning:
        from loom.hooks import encode_scheduled

        return encode_scheduled(self.clip, self._encode)

    def _encode(self, handle: Any) -> Conditioning:
        clip = _sdxl_clip("CLIPTextEncodeSDXLRefiner", handle, refiner=True)
        cond, pooled = clip.encode_from_tokens(clip.tokenize(self.text))
        options = {
            "pooled_output": pooled,
            "aesthetic_score": self.ascore,
            "width": self.width,
            "height": self.height,
        }
        return [[cond, options]]


NODES = (CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner)
