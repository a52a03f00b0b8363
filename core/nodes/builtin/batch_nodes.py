"""ComfyUI 0.8's grow-as-you-connect batch nodes (``comfy_extras/nodes_post_processing.py``):
``BatchImagesNode``, ``BatchMasksNode`` and ``BatchLatentsNode``.

Each takes an Autogrow input (slots ``image0``, ``image1``... at least two, at most 50) and
concatenates the slots given, in slot order. Items of another size are resized to the
first one's (bilinear, centre crop), as ``ImageBatch`` / ``LatentBatch`` do; an RGB image
batched with RGBA ones gets an opaque alpha channel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import loom
from loom.nodes.builtin.compositing import check_channels
from loom.nodes.builtin.latent_ops import fit_latent
from loom.nodes.dynamic import Autogrow, Slot
from loom.resample import common_upscale
from loom.types import Image, Latent, Mask

ui = loom.ui

#: ComfyUI's slot limit for these nodes.
MAX_SLOTS = 50


def _grown(type_: str, prefix: str) -> Any:
    return ui.autogrow(Autogrow(Slot.socket(prefix, type_), prefix=prefix, min=2, max=MAX_SLOTS))


def batch_images(images: list[Image]) -> Image:
    """Concatenate images along the batch: RGB ones get an alpha channel of 1 when others
    have one, and every image takes the first one's size."""
    import torch

    channels = max(image.shape[-1] for image in images)
    padded = [
        torch.nn.functional.pad(image, (0, 1), value=1.0) if image.shape[-1] < channels else image
        for image in images
    ]
    height, width = padded[0].shape[1], padded[0].shape[2]
    resized = [
        image
        if image.shape[1:] == padded[0].shape[1:]
        else common_upscale(image.movedim(-1, 1), width, height, "bilinear", "center").movedim(
            1, -1
        )
        for image in padded
    ]
    return torch.cat(resized, dim=0)


def batch_masks(masks: list[Mask]) -> Mask:
    """Concatenate masks along the batch, each resized to the first one's size."""
    import torch

    height, width = masks[0].shape[1], masks[0].shape[2]
    resized = [
        mask
        if mask.shape[1:] == masks[0].shape[1:]
        else common_upscale(mask.unsqueeze(1), width, height, "bilinear", "center").squeeze(1)
        for mask in masks
    ]
    return torch.cat(resized, dim=0)


def batch_latents(latents: list[Latent], node: str, names: list[str]) -> Latent:
    """Concatenate latents along the batch (each fitted to the first one's size) and their
    ``batch_index`` lists; the first latent's other keys are kept."""
    import torch

    first = latents[0]["samples"]
    samples, indices = [], []
    for latent, name in zip(latents, names, strict=True):
        check_channels(node, first, latent["samples"], (names[0], name))
        samples.append(fit_latent(first.shape, latent["samples"], repeat_batch=False))
        indices.extend(latent.get("batch_index", range(latent["samples"].shape[0])))
    return {**latents[0], "samples": torch.cat(samples, dim=0), "batch_index": list(indices)}


def _given(node: str, grown: Mapping[str, Any], field: str) -> list[Any]:
    items = [value for value in grown.values() if value is not None]
    if not items:
        raise ValueError(f"{node}: input {field!r} has no connected slot")
    return items


@loom.node("BatchImagesNode", category="image", display_name="Batch Images", v3=True)
class BatchImagesNode:
    images: dict[str, Image] = _grown("IMAGE", "image")

    def run(self, ctx: loom.RunContext) -> Image:
        return batch_images(_given("BatchImagesNode", self.images, "images"))


@loom.node("BatchMasksNode", category="mask", display_name="Batch Masks", v3=True)
class BatchMasksNode:
    masks: dict[str, Mask] = _grown("MASK", "mask")

    def run(self, ctx: loom.RunContext) -> Mask:
        return batch_masks(_given("BatchMasksNode", self.masks, "masks"))


@loom.node("BatchLatentsNode", category="latent", display_name="Batch Latents", v3=True)
class BatchLatentsNode:
    latents: dict[str, Latent] = _grown("LATENT", "latent")

    def run(self, ctx: loom.RunContext) -> Latent:
        given = {k: v for k, v in self.latents.items() if v is not None}
        _given("BatchLatentsNode", given, "latents")
        names = [f"latents.{name}" for name in given]
        return batch_latents(list(given.values()), "BatchLatentsNode", names)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in (BatchImagesNode, BatchMasksNode, BatchLatentsNode):
        register(node_class, python_module="comfy_extras.nodes_post_processing")
