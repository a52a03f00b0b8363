"""Attention-multiply nodes: scale the q / k / v / out projections of a UNet's self- or
cross-attention, or of a CLIP text encoder's self-attention (ComfyUI's
``comfy_extras/nodes_attention_multiply.py``).

As in ComfyUI, the scales are weight patches on a clone: every weight *and bias* of the
matching projections is multiplied by its factor (:class:`loom.memory.ScalePatch`), so the
original handle is unchanged and the scaling is undone when the clone is unloaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import loom
from loom.errors import LoomError
from loom.types import Clip, Model

ui = loom.ui
CATEGORY = "_for_testing/attention_experiments"
MODULE = "comfy_extras.nodes_attention_multiply"

#: the UNet's ``attn1`` / ``attn2`` projections (ComfyUI's key suffixes)
UNET_PROJECTIONS = {"q": "to_q", "k": "to_k", "v": "to_v", "out": "to_out.0"}
#: a CLIP text encoder's self-attention projections (transformers' ``CLIPAttention``)
CLIP_PROJECTIONS = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "out": "out_proj"}


def scale_patches(
    keys: Iterable[str], attention: str, names: Mapping[str, str], scales: Mapping[str, float]
) -> dict[str, Any]:
    """``{key: ScalePatch}`` for each weight / bias key ending in ``attention.<projection>``;
    a factor of exactly 1 adds no patch."""
    from loom.memory import ScalePatch

    patches: dict[str, Any] = {}
    for key in keys:
        for which, projection in names.items():
            factor = float(scales[which])
            stem = f"{attention}.{projection}"
            if factor != 1.0 and key.endswith((f"{stem}.weight", f"{stem}.bias")):
                patches[key] = ScalePatch(factor)
    return patches


def _handle_keys(handle: Any) -> list[str]:
    return list(handle.module.state_dict().keys())


def multiplied_model(model: Model, node: str, attention: str, scales: Mapping[str, float]):
    """A clone of ``model`` whose UNet ``attention`` (``attn1`` / ``attn2``) projections are
    scaled."""
    if not hasattr(model, "clone") or not hasattr(model, "add_patches"):
        raise LoomError(
            f"{node}: the model {getattr(model, 'name', type(model).__name__)} takes no "
            "weight patches",
            hint="connect a MODEL from a checkpoint loader",
        )
    patched = model.clone()
    patched.add_patches(scale_patches(_handle_keys(model), attention, UNET_PROJECTIONS, scales))
    return patched


def clip_handles(clip: Any) -> list[Any]:
    """The weight handles a CLIP socket value holds (``handle``, or one per encoder)."""
    from loom.memory import ModelHandle

    return [value for value in vars(clip).values() if isinstance(value, ModelHandle)]


def multiplied_clip(clip: Clip, scales: Mapping[str, float]):
    """A clone of ``clip`` whose text encoders' self-attention projections are scaled."""
    patched = clip.clone()
    handles = clip_handles(patched)
    if not handles:
        raise LoomError(
            f"CLIPAttentionMultiply: the CLIP {type(clip).__name__} holds no text encoder "
            "weights to scale",
            hint="connect a CLIP from a checkpoint or CLIP loader",
        )
    for handle in handles:
        handle.add_patches(
            scale_patches(_handle_keys(handle), "self_attn", CLIP_PROJECTIONS, scales)
        )
    return patched


#: The four factor inputs every attention-multiply node has, in ComfyUI's order.
PROJECTIONS = ("q", "k", "v", "out")


class ProjectionFactors:
    """What an attention-multiply node's factor inputs give it: :meth:`scales`."""

    def scales(self) -> dict[str, float]:
        """The factor of each projection, by its name in ``PROJECTIONS``."""
        return {name: float(getattr(self, name)) for name in PROJECTIONS}


def projection_factors(cls: type[ProjectionFactors]) -> type[ProjectionFactors]:
    """Give a node class (below its ``@loom.node``) the ``q`` / ``k`` / ``v`` / ``out``
    factor inputs, after the inputs it declares itself (ComfyUI's order)."""
    for name in PROJECTIONS:
        cls.__annotations__[name] = float
        setattr(cls, name, ui.float(1.0, min=0.0, max=10.0, step=0.01))
    return cls


@loom.node("UNetSelfAttentionMultiply", category=CATEGORY, experimental=True, v3=True)
@projection_factors
class UNetSelfAttentionMultiply(ProjectionFactors):
    """Scale the q / k / v / out projections of every UNet self-attention (``attn1``)."""

    model: Model

    def run(self, ctx: loom.RunContext) -> Model:
        return multiplied_model(self.model, "UNetSelfAttentionMultiply", "attn1", self.scales())


@loom.node("UNetCrossAttentionMultiply", category=CATEGORY, experimental=True, v3=True)
@projection_factors
class UNetCrossAttentionMultiply(ProjectionFactors):
    """Scale the q / k / v / out projections of every UNet cross-attention (``attn2``)."""

    model: Model

    def run(self, ctx: loom.RunContext) -> Model:
        return multiplied_model(self.model, "UNetCrossAttentionMultiply", "attn2", self.scales())


@loom.node("CLIPAttentionMultiply", category=CATEGORY, experimental=True, v3=True)
@projection_factors
class CLIPAttentionMultiply(ProjectionFactors):
    """Scale the q / k / v / out projections of every CLIP text-encoder self-attention."""

    clip: Clip

    def run(self, ctx: loom.RunContext) -> Clip:
        return multiplied_clip(self.clip, self.scales())


NODES = [UNetSelfAttentionMultiply, UNetCrossAttentionMultiply, CLIPAttentionMultiply]
