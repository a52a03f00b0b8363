"""ComfyUI's ``CreateHookModelAsLora`` and ``CreateHookModelAsLoraModelOnly``: a checkpoint's
weights as a hook ("model as LoRA").

The checkpoint is loaded by its model family like ``CheckpointLoaderSimple`` does; the
hook's patch on each weight the sampled MODEL (or hooked CLIP) shares with it moves that
weight toward the checkpoint's by ``strength * (w_ckpt - w_base)``, ``w_base`` being the stored weight
before any patch (ComfyUI's "model_as_lora" patch): on an unpatched model strength 1
samples with the checkpoint's weights and 0.5 halfway; patches the model already carries
(a LoRA) stay on top. Weights are matched by their key in the model
family's module; none of matching shape means the checkpoint is of another family.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

import loom
from loom.errors import LoomError
from loom.hooks import HookGroup, Hooks, WeightHook, check_hooks
from loom.nodes.builtin.loaders import load_part, model_files
from loom.types import AdapterTarget, LoadedParts, ModelPart

_STRENGTH = {"min": -20.0, "max": 20.0, "step": 0.01}
COMFY_MODULE = "comfy_extras.nodes_hooks"


@attrs.frozen(eq=False)
class ModelAsLoraPatch:
    """``weight + strength * (other - base)``: one weight of a checkpoint taken as a LoRA,
    ``base`` being the sampled model's stored (unpatched) weight, as ComfyUI diffs it."""

    other: Any
    base: Any

    def apply(self, weight: Any, strength: float) -> Any:
        import torch

        # the difference in float32 (ComfyUI's intermediate dtype), added in the merge dtype
        other = self.other.to(weight.device, torch.float32)
        base = self.base.to(weight.device, torch.float32)
        return weight + strength * (other - base).to(weight.dtype)


@attrs.frozen(eq=False)
class CheckpointHookWeights:
    """A loaded checkpoint as a hook's weights (implements :class:`loom.hooks.HookWeights`)."""

    label: str
    parts: LoadedParts
    #: ``(value, kind) -> AdapterKeyMap``: the families' ``adapter_key_map`` answer.
    key_map: Callable[[Any, AdapterTarget], Any]

    def add_patches(self, value: Any, kind: AdapterTarget, strength: float) -> int:
        from loom.memory import ModelHandle, ReplacePatch, stored_tensors

        source = self.parts.model if kind == "model" else self.parts.clip
        if source is None:
            raise LoomError(f"{self.label}: the checkpoint holds no {kind} weights")
        target = self.key_map(value, kind).handle
        own = self.key_map(source, kind).handle.module.state_dict()
        if isinstance(target, ModelHandle):
            base = stored_tensors(target)
        else:  # a CLIP spreading its keys over several handles: diff to the current weight
            base = {}
        shapes = {k: tuple(v.shape) for k, v in target.module.state_dict(keep_vars=True).items()}
        patches = {
            key: ModelAsLoraPatch(tensor, base[key]) if key in base else ReplacePatch(tensor)
            for key, tensor in own.items()
            if shapes.get(key) == tuple(tensor.shape) and tensor.is_floating_point()
        }
        if not patches:
            raise LoomError(
                f"{self.label}: no weight of the checkpoint fits this "
                f"{'MODEL' if kind == 'model' else 'CLIP'}; is it of another model family?",
                hint="use a checkpoint of the same family as the one being sampled",
            )
        return len(target.add_patches(patches, strength))


def create_model_hook(
    ctx: loom.RunContext,
    node: str,
    ckpt_name: str,
    strength_model: float,
    strength_clip: float,
    prev_hooks: Any,
) -> HookGroup:
    previous = check_hooks(prev_hooks, node, "prev_hooks") or HookGroup()
    runtime = ctx.require_runtime("the checkpoints model folder and the model families")
    header, parts = load_part(ctx, "checkpoints", ckpt_name, ModelPart.CHECKPOINT)
    weights = CheckpointHookWeights(
        label=f"{node} (ckpt_name {ckpt_name!r}, file {header.path})",
        parts=parts,
        key_map=lambda value, kind: _key_map(runtime, value, kind),
    )
    hook = WeightHook(weights, strength_model=strength_model, strength_clip=strength_clip)
    return previous.combine(HookGroup((hook,)))


def _key_map(runtime: Any, value: Any, kind: AdapterTarget) -> Any:
    answer = runtime.host.hook.adapter_key_map(model=value, kind=kind)
    if answer is None:
        raise LoomError(
            f"no installed plugin maps weights onto this {kind.upper()} ({type(value).__name__})",
            hint="install the model family plugin (and loom-lora)",
        )
    return answer


@loom.node(
    "CreateHookModelAsLora",
    category="advanced/hooks/create",
    display_name="Create Hook Model as LoRA",
    experimental=True,
)
class CreateHookModelAsLora:
    ckpt_name: str = loom.ui.combo(model_files("checkpoints"))
    strength_model: float = loom.ui.float(1.0, **_STRENGTH)
    strength_clip: float = loom.ui.float(1.0, **_STRENGTH)
    prev_hooks: Hooks = loom.ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> Hooks:
        return create_model_hook(
            ctx,
            "CreateHookModelAsLora",
            self.ckpt_name,
            self.strength_model,
            self.strength_clip,
            self.prev_hooks,
        )


@loom.node(
    "CreateHookModelAsLoraModelOnly",
    category="advanced/hooks/create",
    display_name="Create Hook Model as LoRA (MO)",
    experimental=True,
)
class CreateHookModelAsLoraModelOnly:
    ckpt_name: str = loom.ui.combo(model_files("checkpoints"))
    strength_model: float = loom.ui.float(1.0, **_STRENGTH)
    prev_hooks: Hooks = loom.ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> Hooks:
        return create_model_hook(
            ctx,
            "CreateHookModelAsLoraModelOnly",
            self.ckpt_name,
            self.strength_model,
            0.0,
            self.prev_hooks,
        )


NODES = (CreateHookModelAsLora, CreateHookModelAsLoraModelOnly)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in NODES:
        register(node_class, python_module=COMFY_MODULE)
