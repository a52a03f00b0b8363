"""ComfyUI's LoRA loader nodes: ``LoraLoader`` and ``LoraLoaderModelOnly``.

A LoRA becomes patches on *clones* of the MODEL and CLIP handles: the base weights are
shared, never copied, and the patches take effect only while the memory manager has the
clone loaded. The file is read memory-mapped; its tensors stay in the page cache until a
patch needs them. The model family names its weights through the ``adapter_key_map`` hook.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import loom
from loom.errors import LoomError
from loom.folders import ModelFileChoices
from loom.types import AdapterKeyMap, AdapterTarget, Clip, Model, WeightAdapter
from loom_lora.loader import Target, apply_report, log_report, plan_patches

log = logging.getLogger(__name__)

STRENGTH = {"min": -100.0, "max": 100.0, "step": 0.01}
DESCRIPTION_HINT = "install the model family plugin that loaded this model"


_NEEDS = "the loras model folder and the plugins' weight adapters"


#: The ``lora_name`` combo: files in the ``loras`` model folder (live).
lora_files = ModelFileChoices("loras")


def resolve_lora(ctx: loom.RunContext, name: str) -> Path:
    return ctx.require_runtime(_NEEDS).folders.require("loras", name)


def adapters_of(ctx: loom.RunContext) -> list[WeightAdapter]:
    """The registered weight adapters (every plugin's, in registration order)."""
    registry = ctx.require_runtime(_NEEDS).registry
    adapters = list(registry.weight_adapters.values())
    if not adapters:
        raise LoomError("no weight adapters are registered", hint="is loom-lora installed?")
    return adapters


def key_map_of(ctx: loom.RunContext, value: Any, kind: AdapterTarget) -> AdapterKeyMap:
    """Ask the model families which handle to patch and how adapters name its weights."""
    answer = ctx.require_runtime(_NEEDS).host.hook.adapter_key_map(model=value, kind=kind)
    if answer is None:
        raise LoomError(
            f"no installed plugin maps LoRA keys onto this {kind.upper()} ({type(value).__name__})",
            hint=DESCRIPTION_HINT,
        )
    return answer


def load_lora(
    ctx: loom.RunContext,
    lora_name: str,
    parts: Sequence[tuple[str, Any, float]],
    skip_parts: Sequence[str] = (),
) -> list[Any]:
    """Clone each ``(kind, value, strength)`` and patch the clones; returns the clones.

    A part at strength 0 is returned as it was (no clone, no patches: bitwise unchanged).
    """
    active = [(kind, value, strength) for kind, value, strength in parts if strength != 0]
    clones = {kind: value.clone() for kind, value, _ in active}
    if not active:
        return [value for _, value, _ in parts]
    from loom.memory import open_safetensors

    path = resolve_lora(ctx, lora_name)
    targets = []
    for kind, _, strength in active:
        answer = key_map_of(ctx, clones[kind], kind)
        targets.append(Target(kind, answer.handle, answer.keys, strength, answer.slices))
    tensors = open_safetensors(path)
    report = plan_patches(tensors, targets, adapters_of(ctx), skip_parts=skip_parts)
    counts = apply_report(report, targets)
    log_report(path.name, report, counts)
    return [clones.get(kind, value) for kind, value, _ in parts]


@loom.outputs
class LoraOutputs:
    model: Model = loom.output(name="MODEL", tooltip="The modified diffusion model.")
    clip: Clip = loom.output(name="CLIP", tooltip="The modified CLIP model.")


@loom.node("LoraLoader", category="loaders", display_name="Load LoRA")
class LoraLoader:
    """LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are denoised such as applying styles. Multiple LoRA nodes can be linked together."""

    model: Model = loom.ui.input(tooltip="The diffusion model the LoRA will be applied to.")
    clip: Clip = loom.ui.input(tooltip="The CLIP model the LoRA will be applied to.")
    lora_name: str = loom.ui.combo(lora_files, tooltip="The name of the LoRA.")
    strength_model: float = loom.ui.float(
        1.0,
        **STRENGTH,
        tooltip="How strongly to modify the diffusion model. This value can be negative.",
    )
    strength_clip: float = loom.ui.float(
        1.0,
        **STRENGTH,
        tooltip="How strongly to modify the CLIP model. This value can be negative.",
    )

    def run(self, ctx: loom.RunContext) -> LoraOutputs:
        model, clip = load_lora(
            ctx,
            self.lora_name,
            [("model", self.model, self.strength_model), ("clip", self.clip, self.strength_clip)],
        )
        return LoraOutputs(model=model, clip=clip)


@loom.node("LoraLoaderModelOnly", category="loaders")
class LoraLoaderModelOnly:
    """LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are denoised such as applying styles. Multiple LoRA nodes can be linked together."""

    model: Model
    lora_name: str = loom.ui.combo(lora_files)
    strength_model: float = loom.ui.float(1.0, **STRENGTH)

    def run(self, ctx: loom.RunContext) -> Model:
        [model] = load_lora(
            ctx, self.lora_name, [("model", self.model, self.strength_model)], skip_parts=("clip",)
        )
        return model


NODES: tuple[Callable[..., Any], ...] = (LoraLoader, LoraLoaderModelOnly)
