"""Upscaling an IMAGE batch with an upscale model: tiles within a memory budget.

ComfyUI's rule, kept: 512-pixel tiles overlapping by 32, and on running out of device
memory the tile is halved and the whole image tried again, down to 128 pixels. Loom adds
the budget: the tile starts at the largest of 512, 256, 128 whose estimated activations
(ComfyUI's estimate, :func:`~loom_upscale.model.activation_bytes`) fit in what the memory
manager can give beside the model, so a small device starts small instead of failing
first. The memory manager loads the model (evicting others to make room) and says where
and in which dtype it computes; nothing here picks a device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from loom.errors import LoomError
from loom.memory import MemoryManager
from loom.tiling import Tiling, tiled_scale
from loom_upscale.model import UpscaleModel, activation_bytes

log = logging.getLogger(__name__)

#: ComfyUI's ImageUpscaleWithModel tiling.
TILE = 512
OVERLAP = 32
MIN_TILE = 128

#: What running out of device memory raises (``torch.OutOfMemoryError`` is torch 2.3+).
OUT_OF_MEMORY: type[BaseException] = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

#: ``progress(done, total)`` after each tile; may raise to interrupt.
Progress = Callable[[int, int], None]


def starting_tile(
    model: UpscaleModel, memory: MemoryManager, image: torch.Tensor, dtype: torch.dtype
) -> int:
    """The largest tile (512, 256, 128) whose activations fit the budget beside the model.

    The model's weights and the image's own bytes count against the budget, as in
    ComfyUI's estimate. Where even 128 does not fit, 128 (the manager streams the weights
    and the out-of-memory fallback has the last word).
    """
    fixed = model.handle.size_bytes() + image.nelement() * image.element_size()
    room = memory.budget_bytes() - fixed
    tile = TILE
    while tile > MIN_TILE and activation_bytes(tile, model.scale, dtype) > room:
        tile //= 2
    if tile != TILE:
        log.info(
            "upscaling with %d-pixel tiles: %d bytes of budget left beside %s",
            tile,
            room,
            model.path.name,
        )
    return tile


def upscale(
    model: UpscaleModel,
    image: torch.Tensor,
    memory: MemoryManager,
    *,
    progress: Progress | None = None,
    context: str = "ImageUpscaleWithModel",
) -> torch.Tensor:
    """``image`` ``[B, H, W, C]`` in [0, 1] scaled by ``model.scale``, clamped to [0, 1].

    :raises LoomError: the image has the wrong channel count, or even 128-pixel tiles run
        out of device memory.
    """
    if image.ndim != 4 or image.shape[-1] != model.input_channels:
        raise LoomError(
            f"{context}: {model.path.name} takes {model.input_channels}-channel images, got an "
            f"IMAGE of shape {tuple(image.shape)}"
        )
    dtype = model.handle.compute_dtype or torch.float32
    tile = starting_tile(model, memory, image, dtype)
    pixels = image.movedim(-1, 1)
    while True:
        memory.load([model.handle], extra_memory=activation_bytes(tile, model.scale, dtype))
        target = model.handle.compute_target
        tiling = Tiling(tile, OVERLAP, float(model.scale))
        try:
            with torch.inference_mode():
                scaled = _run(model, pixels, tiling, target.device, target.dtype, progress)
            break
        except OUT_OF_MEMORY as exc:
            if tile // 2 < MIN_TILE:
                raise LoomError(
                    f"{context}: out of device memory upscaling a {image.shape[2]}x"
                    f"{image.shape[1]} image with {model.path.name}, even in {tile}-pixel tiles",
                    hint="free device memory, or upscale a smaller image",
                ) from exc
            log.warning("out of memory with %d-pixel tiles; trying %d", tile, tile // 2)
            tile //= 2
            memory.free(activation_bytes(tile, model.scale, dtype), keep=[model.handle])
    return scaled.movedim(1, -1).clamp(0.0, 1.0)


def _run(
    model: UpscaleModel,
    pixels: torch.Tensor,
    tiling: Tiling,
    device: torch.device,
    dtype: torch.dtype,
    progress: Progress | None,
) -> torch.Tensor:
    batch, _, height, width = pixels.shape
    total = batch * tiling.steps(height, width)
    done = 0

    def on_tile() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    def scale_tile(piece: torch.Tensor) -> torch.Tensor:
        return model(piece.to(device, dtype))

    return tiled_scale(pixels, scale_tile, tiling, model.output_channels, on_tile)
