"""Latent operations (ComfyUI's experimental LATENT_OPERATION nodes of
``comfy_extras/nodes_latent.py``): a typed operation value built by one node and applied by
another, to a latent or, before CFG, to each step's guidance direction.

The operations are frozen attrs classes (:class:`loom.types.LatentOperationFunction`), so the
value on the wire says what it is and compares by its settings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

import loom
from loom.input_checks import check_padding
from loom.nodes.builtin.image_ops import filter_image, sharpen_kernel
from loom.samplers import PreCFGStep, guidance_hooks_of
from loom.types import Latent, LatentOperation, LatentOperationFunction, Model

ui = loom.ui


@attrs.frozen
class TonemapReinhard:
    """Reinhard tone mapping of the per-pixel channel-vector magnitudes, scaled so that
    ``multiplier * (mean + 5 std)`` of the magnitudes maps to the curve's knee."""

    multiplier: float

    def __call__(self, latent: Any) -> Any:
        import torch

        magnitude = (torch.linalg.vector_norm(latent, dim=1) + 1e-10)[:, None]
        direction = latent / magnitude
        dims = list(range(1, magnitude.ndim))
        mean = torch.mean(magnitude, dim=dims, keepdim=True)
        std = torch.std(magnitude, dim=dims, keepdim=True)
        top = (std * 5 + mean) * self.multiplier
        scaled = magnitude / top
        return direction * (scaled / (scaled + 1.0) * top)


@attrs.frozen
class Sharpen:
    """Unsharp masking of the unit channel vectors (``ImageSharpen``'s kernel, edges
    reflected), rescaled by the original per-pixel magnitudes."""

    radius: int
    sigma: float
    alpha: float

    def __call__(self, latent: Any) -> Any:
        import torch

        height, width = latent.shape[-2:]
        check_padding(
            "LatentOperationSharpen", "latent", height, width, "sharpen_radius", self.radius
        )
        luminance = (torch.linalg.vector_norm(latent, dim=1) + 1e-6)[:, None]
        kernel = sharpen_kernel(self.radius, self.sigma, self.alpha, latent.device)
        sharpened = filter_image((latent / luminance).movedim(1, -1), kernel, self.radius)
        return luminance * sharpened.movedim(-1, 1)


@attrs.frozen
class OperationOnGuidance:
    """A :class:`loom.samplers.PreCFGFunction` applying an operation to ``cond - uncond``
    (the guidance direction), the unconditional prediction left as it is (zeros where the
    cfg = 1 shortcut skipped it, so the operation then sees the conditional prediction)."""

    operation: LatentOperationFunction

    def __call__(self, step: PreCFGStep) -> tuple[Any, ...]:
        cond, uncond, *rest = step.outputs
        return (self.operation(cond - uncond) + uncond, uncond, *rest)


@loom.node(
    "LatentApplyOperation", category="latent/advanced/operations", experimental=True, v3=True
)
class LatentApplyOperation:
    samples: Latent
    operation: LatentOperation

    def run(self, ctx: loom.RunContext) -> Latent:
        return {**self.samples, "samples": self.operation(self.samples["samples"])}


@loom.node(
    "LatentApplyOperationCFG", category="latent/advanced/operations", experimental=True, v3=True
)
class LatentApplyOperationCFG:
    model: Model
    operation: LatentOperation

    def run(self, ctx: loom.RunContext) -> Model:
        model = self.model.clone()
        hooks = guidance_hooks_of(model)
        model.guidance = hooks.with_pre_cfg(OperationOnGuidance(self.operation))
        return model


@loom.node(
    "LatentOperationTonemapReinhard",
    category="latent/advanced/operations",
    experimental=True,
    v3=True,
)
class LatentOperationTonemapReinhard:
    multiplier: float = ui.float(1.0, min=0.0, max=100.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> LatentOperation:
        return TonemapReinhard(self.multiplier)


@loom.node(
    "LatentOperationSharpen", category="latent/advanced/operations", experimental=True, v3=True
)
class LatentOperationSharpen:
    sharpen_radius: int = ui.int(9, min=1, max=31, step=1)
    sigma: float = ui.float(1.0, min=0.1, max=10.0, step=0.1)
    alpha: float = ui.float(0.1, min=0.0, max=5.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> LatentOperation:
        return Sharpen(self.sharpen_radius, self.sigma, self.alpha)


NODES: tuple[type, ...] = (
    LatentApplyOperation,
    LatentApplyOperationCFG,
    LatentOperationTonemapReinhard,
    LatentOperationSharpen,
)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in NODES:
        register(node_class, python_module="comfy_extras.nodes_latent")
