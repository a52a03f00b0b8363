"""ComfyUI's upscale-model nodes: ``UpscaleModelLoader`` and ``ImageUpscaleWithModel``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import loom
from loom.errors import ModelFileError
from loom.folders import ModelFileChoices
from loom.types import Image, Socket
from loom_upscale.loader import FOLDER, UpscaleModelError, load_upscale_model, where

if TYPE_CHECKING:
    from loom.memory import MemoryManager

#: The ``UPSCALE_MODEL`` socket: a :class:`loom_upscale.model.UpscaleModel` (the annotation
#: names no class, so registering the nodes imports no torch).
UpscaleModelSocket = Annotated[Any, Socket("UPSCALE_MODEL")]

#: ComfyUI's source module of both nodes (``comfy_extras/nodes_upscale_model.py``).
PYTHON_MODULE = "comfy_extras.nodes_upscale_model"


#: The ``model_name`` combo: files in the ``upscale_models`` folder (live).
upscale_model_files = ModelFileChoices(FOLDER)


def memory_of(ctx: loom.RunContext) -> MemoryManager:
    """The runtime's memory manager; without a runtime, a CPU one (same load path)."""
    if ctx.runtime is not None:
        return ctx.runtime.memory
    from loom.memory import MemoryManager, cpu_device

    return MemoryManager(cpu_device())


# ComfyUI gives these nodes no description; class comments keep /object_info's empty.
@loom.node("UpscaleModelLoader", category="loaders", display_name="Load Upscale Model", v3=True)
class UpscaleModelLoader:
    model_name: str = loom.ui.combo(upscale_model_files)

    def run(self, ctx: loom.RunContext) -> UpscaleModelSocket:
        context = where("UpscaleModelLoader", "model_name", self.model_name)
        folders = ctx.require_runtime("the upscale_models model folder").folders
        try:
            path = folders.require(FOLDER, self.model_name)
        except ModelFileError as error:
            raise UpscaleModelError(f"{context}: {error.message}", hint=error.hint) from None
        return load_upscale_model(path, context)


@loom.node(
    "ImageUpscaleWithModel",
    category="image/upscaling",
    display_name="Upscale Image (using Model)",
    v3=True,
)
class ImageUpscaleWithModel:
    upscale_model: UpscaleModelSocket
    image: Image

    def run(self, ctx: loom.RunContext) -> Image:
        from loom_upscale.upscale import upscale

        return upscale(
            self.upscale_model,
            self.image,
            memory_of(ctx),
            progress=ctx.progress,
            context="ImageUpscaleWithModel",
        )


NODES: tuple[type, ...] = (UpscaleModelLoader, ImageUpscaleWithModel)
