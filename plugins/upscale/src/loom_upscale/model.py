"""The UPSCALE_MODEL socket value: a spandrel single-image model behind a memory handle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch

from loom.memory import MemoryEstimator, ModelHandle

#: ComfyUI's activation estimate for one tile: ``tile² · 3 · bytes · max(scale, 1) · 384``
#: (its comment calls 384 "an estimate of how much some of these models take").
ACTIVATION_FACTOR = 384


def activation_bytes(tile: int, scale: float, dtype: torch.dtype) -> int:
    """Bytes one forward on a ``tile`` x ``tile`` RGB tile is expected to need."""
    return int(tile * tile * 3 * dtype.itemsize * max(scale, 1.0) * ACTIVATION_FACTOR)


def _estimator(scale: float) -> MemoryEstimator:
    def estimate(input_shape: tuple[int, ...], dtype: torch.dtype) -> int:
        height, width = input_shape[-2], input_shape[-1]
        return activation_bytes(max(height, width), scale, dtype)

    return estimate


@attrs.define(eq=False)
class UpscaleModel:
    """An upscale model file loaded by spandrel: what ``UpscaleModelLoader`` returns.

    ``descriptor`` is spandrel's ``ImageModelDescriptor`` (architecture, scale, channels,
    size requirements; calling it pads, runs and clamps one ``[1, C, H, W]`` image);
    ``handle`` wraps the same torch module for the memory manager, which decides where and
    in which dtype it runs. ``path`` is the file it came from (for messages).
    """

    descriptor: Any
    handle: ModelHandle
    path: Path
    #: spandrel's architecture id (``"ESRGAN"``, ``"SwinIR"``, ``"HAT"``, ...)
    architecture: str
    #: how many times larger each side of the output is
    scale: int
    input_channels: int
    output_channels: int

    @classmethod
    def from_descriptor(cls, descriptor: Any, path: Path) -> UpscaleModel:
        """Wrap a loaded spandrel descriptor; the module computes in its weights' dtype
        (spandrel's modules are plain torch layers, not Loom's cast layers)."""
        module = descriptor.model
        first = next(iter(module.parameters()), None)
        dtype = first.dtype if first is not None else torch.float32
        scale = int(descriptor.scale)
        handle = ModelHandle(
            module,
            name=f"upscale:{path.name}",
            memory_estimator=_estimator(float(scale)),
            compute_dtype=dtype,
        )
        return cls(
            descriptor,
            handle,
            path,
            architecture=str(descriptor.architecture.id),
            scale=scale,
            input_channels=int(descriptor.input_channels),
            output_channels=int(descriptor.output_channels),
        )

    @property
    def model(self) -> torch.nn.Module:
        """The torch module (shared with ``handle``)."""
        return self.handle.module

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """One ``[1, C, H, W]`` image in [0, 1] on the model's device and dtype -> scaled."""
        return self.descriptor(image)
