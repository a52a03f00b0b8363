"""Nodes that use a loaded text encoder or VAE: ComfyUI's ``CLIPTextEncode``,
``CLIPSetLastLayer``, ``VAEDecode``, ``VAEEncode`` and their tiled variants.

They only call the :class:`~loom.types.ClipLike` and :class:`~loom.types.VaeLike`
protocols; the family plugin that loaded the handle does the work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import loom
from loom.errors import LoomError
from loom.executor.context import RunContext
from loom.input_checks import check_vae_pixels
from loom.nodes.spec import OutputDef
from loom.types import Clip, Conditioning, Image, Latent, Mask, Vae

COMFY_MODULE = "nodes"

CLIP_MISSING = (
    "ERROR: clip input is invalid: None\n\nIf the clip is from a checkpoint loader node your "
    "checkpoint does not contain a valid clip or text encoder model."
)
VAE_MISSING = (
    "ERROR: VAE is invalid: None\n\nIf the VAE is from a checkpoint loader node your "
    "checkpoint does not contain a valid VAE."
)

_FILE_INPUTS = ("ckpt_name", "clip_name", "clip_name1", "vae_name", "unet_name")


def _source_hint(ctx: RunContext, input_name: str) -> str | None:
    """Which loader node and file fed ``input_name``, read from the prompt, for error hints."""
    prompt = ctx.prompt
    node = prompt.get(ctx.node_id) or {}
    link = (node.get("inputs") or {}).get(input_name)
    if not (isinstance(link, list) and len(link) == 2):
        return None
    source = prompt.get(str(link[0])) or {}
    inputs = source.get("inputs") or {}
    for key in _FILE_INPUTS:
        if isinstance(inputs.get(key), str):
            return (
                f"{input_name} comes from node {link[0]} ({source.get('class_type')}) "
                f"loading {inputs[key]}"
            )
    return None


def _require(value: Any, ctx: RunContext, input_name: str, message: str) -> Any:
    if value is None:
        raise LoomError(message, hint=_source_hint(ctx, input_name))
    return value


def _images(images: Any) -> Any:
    """Fold video frames into the batch, as ComfyUI does: ``[B, T, H, W, C]`` -> ``[B*T, H, W, C]``."""
    if images.ndim == 5:
        return images.reshape(-1, *images.shape[-3:])
    return images


@loom.node(
    "CLIPTextEncode",
    category="conditioning",
    display_name="CLIP Text Encode (Prompt)",
    outputs=[
        OutputDef(
            "CONDITIONING",
            "CONDITIONING",
            tooltip=(
                "A conditioning containing the embedded text used to guide the diffusion model."
            ),
        )
    ],
)
class CLIPTextEncode:
    """Encodes a text prompt using a CLIP model into an embedding that can be used to guide the diffusion model towards generating specific images."""

    text: str = loom.ui.string(
        None, multiline=True, dynamic_prompts=True, tooltip="The text to be encoded."
    )
    clip: Clip = loom.ui.input(tooltip="The CLIP model used for encoding the text.")

    def run(self, ctx: loom.RunContext) -> Conditioning:
        clip = _require(self.clip, ctx, "clip", CLIP_MISSING)
        return clip.encode(self.text)


@loom.node("CLIPSetLastLayer", category="conditioning", display_name="CLIP Set Last Layer")
class CLIPSetLastLayer:
    clip: Clip
    stop_at_clip_layer: int = loom.ui.int(-1, min=-24, max=-1, step=1)

    def run(self, ctx: loom.RunContext) -> Clip:
        clip = _require(self.clip, ctx, "clip", CLIP_MISSING).clone()
        clip.set_last_layer(self.stop_at_clip_layer)
        return clip


@loom.node(
    "VAEDecode",
    category="latent",
    display_name="VAE Decode",
    outputs=[OutputDef("IMAGE", "IMAGE", tooltip="The decoded image.")],
)
class VAEDecode:
    """Decodes latent images back into pixel space images."""

    samples: Latent = loom.ui.input(tooltip="The latent to be decoded.")
    vae: Vae = loom.ui.input(tooltip="The VAE model used for decoding the latent.")

    def run(self, ctx: loom.RunContext) -> Image:
        vae = _require(self.vae, ctx, "vae", VAE_MISSING)
        return _images(vae.decode(self.samples["samples"]))


@loom.node("VAEEncode", category="latent", display_name="VAE Encode")
class VAEEncode:
    pixels: Image
    vae: Vae

    def run(self, ctx: loom.RunContext) -> Latent:
        vae = _require(self.vae, ctx, "vae", VAE_MISSING)
        check_vae_pixels("VAEEncode", self.pixels, vae)
        return {"samples": vae.encode(self.pixels[:, :, :, :3])}


@loom.node("VAEDecodeTiled", category="_for_testing", display_name="VAE Decode (Tiled)")
class VAEDecodeTiled:
    samples: Latent
    vae: Vae
    tile_size: int = loom.ui.int(512, min=64, max=4096, step=32)
    overlap: int = loom.ui.int(64, min=0, max=4096, step=32)
    temporal_size: int = loom.ui.int(
        64,
        min=8,
        max=4096,
        step=4,
        tooltip="Only used for video VAEs: Amount of frames to decode at a time.",
    )
    temporal_overlap: int = loom.ui.int(
        8, min=4, max=4096, step=4, tooltip="Only used for video VAEs: Amount of frames to overlap."
    )

    def run(self, ctx: loom.RunContext) -> Image:
        vae = _require(self.vae, ctx, "vae", VAE_MISSING)
        overlap = self.overlap
        if self.tile_size < overlap * 4:  # ComfyUI keeps the overlap at most a quarter tile
            overlap = self.tile_size // 4
        # temporal_size / temporal_overlap only matter to video VAEs, which VaeLike does
        # not cover yet; they are accepted so ComfyUI workflows validate unchanged.
        return _images(vae.decode_tiled(self.samples["samples"], self.tile_size, overlap))


@loom.node("VAEEncodeTiled", category="_for_testing", display_name="VAE Encode (Tiled)")
class VAEEncodeTiled:
    pixels: Image
    vae: Vae
    tile_size: int = loom.ui.int(512, min=64, max=4096, step=64)
    overlap: int = loom.ui.int(64, min=0, max=4096, step=32)
    temporal_size: int = loom.ui.int(
        64,
        min=8,
        max=4096,
        step=4,
        tooltip="Only used for video VAEs: Amount of frames to encode at a time.",
    )
    temporal_overlap: int = loom.ui.int(
        8, min=4, max=4096, step=4, tooltip="Only used for video VAEs: Amount of frames to overlap."
    )

    def run(self, ctx: loom.RunContext) -> Latent:
        vae = _require(self.vae, ctx, "vae", VAE_MISSING)
        check_vae_pixels("VAEEncodeTiled", self.pixels, vae)
        return {"samples": vae.encode_tiled(self.pixels[:, :, :, :3], self.tile_size, self.overlap)}


def _crop_to(pixels: Any, ratio: int) -> tuple[Any, int, int]:
    """Centre-crop ``[B, H, W, C]`` to multiples of ``ratio``; also the (row, col) offsets."""
    h, w = (pixels.shape[1] // ratio) * ratio, (pixels.shape[2] // ratio) * ratio
    top, left = (pixels.shape[1] % ratio) // 2, (pixels.shape[2] % ratio) // 2
    return pixels[:, top : top + h, left : left + w, :], top, left


def _with_concat(conditioning: Conditioning, values: dict[str, Any]) -> Conditioning:
    return [[tensor, {**options, **values}] for tensor, options in conditioning]


@loom.outputs
class EditConditioning:
    positive: Conditioning = loom.output(name="positive")
    negative: Conditioning = loom.output(name="negative")
    latent: Latent = loom.output(name="latent")


# ComfyUI gives these two no description; class comments keep /object_info's empty.
# Inpainting models (Flux Fill, SD inpainting): the masked-out image and the mask go to the
# model as concat inputs; the latent to sample is the whole image.
@loom.node("InpaintModelConditioning", category="conditioning/inpaint")
class InpaintModelConditioning:
    positive: Conditioning
    negative: Conditioning
    vae: Vae
    pixels: Image
    mask: Mask
    noise_mask: bool = loom.ui.boolean(
        True,
        tooltip=(
            "Add a noise mask to the latent so sampling will only happen within the mask. "
            "Might improve results or completely break things depending on the model."
        ),
    )

    def run(self, ctx: loom.RunContext) -> EditConditioning:
        import torch.nn.functional as F

        vae = _require(self.vae, ctx, "vae", VAE_MISSING)
        check_vae_pixels("InpaintModelConditioning", self.pixels, vae)
        pixels = self.pixels[..., :3]
        mask = self.mask.reshape((-1, 1, self.mask.shape[-2], self.mask.shape[-1]))
        mask = F.interpolate(mask, size=(pixels.shape[1], pixels.shape[2]), mode="bilinear")
        ratio = getattr(vae, "downscale_ratio", 8)
        cropped, top, left = _crop_to(pixels, ratio)
        mask = mask[:, :, top : top + cropped.shape[1], left : left + cropped.shape[2]]
        keep = (1.0 - mask.round()).squeeze(1)[..., None]
        concat = vae.encode((cropped - 0.5) * keep + 0.5)
        out_latent: dict[str, Any] = {"samples": vae.encode(pixels)}
        if self.noise_mask:
            out_latent["noise_mask"] = mask
        values = {"concat_latent_image": concat, "concat_mask": mask}
        return EditConditioning(
            positive=_with_concat(self.positive, values),
            negative=_with_concat(self.negative, values),
            latent=out_latent,
        )


# Control models taking the encoded image as concat input (Flux Canny/Depth, InstructPix2Pix).
@loom.node("InstructPixToPixConditioning", category="conditioning/instructpix2pix", v3=True)
class InstructPixToPixConditioning:
    positive: Conditioning
    negative: Conditioning
    vae: Vae
    pixels: Image

    def run(self, ctx: loom.RunContext) -> EditConditioning:
        import torch

        vae = _require(self.vae, ctx, "vae", VAE_MISSING)
        check_vae_pixels("InstructPixToPixConditioning", self.pixels, vae)
        cropped, _, _ = _crop_to(self.pixels[..., :3], 8)
        concat = vae.encode(cropped)
        values = {"concat_latent_image": concat}
        return EditConditioning(
            positive=_with_concat(self.positive, values),
            negative=_with_concat(self.negative, values),
            latent={"samples": torch.zeros_like(concat)},
        )


NODES = (CLIPTextEncode, CLIPSetLastLayer, VAEDecode, VAEEncode, VAEDecodeTiled, VAEEncodeTiled)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in NODES:
        register(node_class, python_module=COMFY_MODULE)
    register(InpaintModelConditioning, python_module=COMFY_MODULE)
    register(InstructPixToPixConditioning, python_module="comfy_extras.nodes_ip2p")
