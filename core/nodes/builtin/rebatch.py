"""RebatchImages and RebatchLatents (ComfyUI's ``comfy_extras/nodes_rebatch.py``): regroup a
list of batches into batches of ``batch_size``, emitted as a list (one downstream run each).

Both take their inputs as lists (``INPUT_IS_LIST``), so ``batch_size`` arrives as a
one-item list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

import loom
from loom.types import Image, Latent

ui = loom.ui


@loom.node(
    "RebatchImages",
    category="image/batch",
    display_name="Rebatch Images",
    input_is_list=True,
    outputs=[loom.OutputDef("IMAGE", "IMAGE", is_list=True)],
    v3=True,
)
class RebatchImages:
    images: Image
    batch_size: int = ui.int(1, min=1, max=4096)

    def run(self, ctx: loom.RunContext) -> list:
        import torch

        size = self.batch_size[0]
        frames = [image[i : i + 1] for image in self.images for i in range(image.shape[0])]
        return [torch.cat(frames[i : i + size], dim=0) for i in range(0, len(frames), size)]


@attrs.define
class _Run:
    """Latents gathered so far: samples, per-item noise masks (image resolution), stream indices."""

    samples: Any
    masks: Any
    indices: list[int]

    def cat(self, other: _Run) -> _Run:
        import torch

        return _Run(
            torch.cat((self.samples, other.samples)),
            torch.cat((self.masks, other.masks)),
            self.indices + other.indices,
        )

    def take(self, start: int, stop: int | None) -> _Run:
        return _Run(self.samples[start:stop], self.masks[start:stop], self.indices[start:stop])

    def latent(self) -> Latent:
        out: Latent = {"samples": self.samples, "batch_index": self.indices}
        if self.masks.mean() != 1.0:  # an all-ones mask means "no mask"
            out["noise_mask"] = self.masks
        return out


def _as_run(latent: Latent, offset: int) -> _Run:
    import torch

    samples = latent["samples"]
    batch, height, width = samples.shape[0], samples.shape[-2] * 8, samples.shape[-1] * 8
    mask = latent.get("noise_mask")
    if mask is None:
        mask = torch.ones((batch, 1, height, width))
    else:
        # ComfyUI computes this resize but drops its result; resizing keeps mixed sizes joinable.
        mask = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
        if mask.shape[-2:] != (height, width):
            mask = torch.nn.functional.interpolate(mask, size=(height, width), mode="bilinear")
    if mask.shape[0] < batch:
        mask = mask.repeat((batch - 1) // mask.shape[0] + 1, 1, 1, 1)[:batch]
    indices = list(latent.get("batch_index", range(offset, offset + batch)))
    return _Run(samples, mask, indices)


@loom.node(
    "RebatchLatents",
    category="latent/batch",
    display_name="Rebatch Latents",
    input_is_list=True,
    outputs=[loom.OutputDef("LATENT", "LATENT", is_list=True)],
    v3=True,
)
class RebatchLatents:
    latents: Latent
    batch_size: int = ui.int(1, min=1, max=4096)

    def run(self, ctx: loom.RunContext) -> list:
        size = self.batch_size[0]
        out: list[Latent] = []
        current: _Run | None = None
        processed = 0
        for latent in self.latents:
            item = _as_run(latent, processed)
            processed += len(item.indices)
            if current is None:
                current = item
            elif item.samples.shape[-2:] != current.samples.shape[-2:]:
                out.append(current.take(0, size).latent())  # ComfyUI keeps only the first batch
                current = item
            else:
                current = current.cat(item)
            full = current.samples.shape[0] // size
            if current.samples.shape[0] > size:
                out += [current.take(i * size, (i + 1) * size).latent() for i in range(full)]
                current = (
                    current.take(full * size, None) if full * size < len(current.indices) else None
                )
        if current is not None:
            out.append(current.take(0, size).latent())
        return out


NODES: tuple[type, ...] = (RebatchLatents, RebatchImages)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in NODES:
        register(node_class, python_module="comfy_extras.nodes_rebatch")
