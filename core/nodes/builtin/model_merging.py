"""ComfyUI's model-merging nodes: ``ModelMergeSimple``, ``ModelMergeBlocks``,
``ModelMergeSubtract``, ``ModelMergeAdd`` and the ``CLIPMerge*`` trio.

Each clones its first input and queues :class:`loom.memory.MergePatch` es built from the
second (:func:`loom.memory.merge_into`): the weights mix when the clone is loaded, the inputs
stay as they were. A CLIP's weights are found through the ``adapter_key_map`` hook (the
family names the handle holding its text encoders).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import loom
from loom import ui
from loom.errors import LoomError
from loom.types import Clip, Model

COMFY_MODULE = "comfy_extras.nodes_model_merging"
CATEGORY = "advanced/model_merging"
_NEEDS = "the model families, to find a CLIP's weights"

#: Tensors of a text encoder that are not learned weights: ComfyUI never merges them.
_CLIP_SKIPPED = (".position_ids", ".logit_scale")


def _model_handle(node: str, name: str, value: Any) -> Any:
    from loom.memory import ModelHandle

    if not isinstance(value, ModelHandle):
        raise LoomError(
            f"{node}: input {name} is a {type(value).__name__}, not a model whose weights "
            "can be merged"
        )
    return value


def merge_models(node: str, model1: Any, model2: Any, scales: Callable) -> Any:
    """A clone of ``model1`` carrying the merge of ``model2`` by ``scales``."""
    from loom.memory import merge_into

    first = _model_handle(node, "model1", model1)
    second = _model_handle(node, "model2", model2)
    merged = first.clone()
    merge_into(merged, second, scales)
    return merged


def _clip_handle(ctx: loom.RunContext, node: str, name: str, clip: Any) -> Any:
    from loom.memory import ModelHandle

    answer = ctx.require_runtime(_NEEDS).host.hook.adapter_key_map(model=clip, kind="clip")
    handle = None if answer is None else answer.handle
    if not isinstance(handle, ModelHandle):
        raise LoomError(
            f"{node}: input {name} ({type(clip).__name__}) does not keep its text encoders "
            "in one model handle; merging it is not supported"
        )
    return handle


def merge_clips(ctx: loom.RunContext, node: str, clip1: Any, clip2: Any, scales: Callable) -> Any:
    """A clone of ``clip1`` carrying the merge of ``clip2``'s text-encoder weights."""
    from loom.memory import merge_into

    merged = clip1.clone()
    target = _clip_handle(ctx, node, "clip1", merged)
    source = _clip_handle(ctx, node, "clip2", clip2)

    def clip_scales(key: str) -> tuple[float, float] | None:
        return None if key.endswith(_CLIP_SKIPPED) else scales(key)

    merge_into(target, source, clip_scales)
    return merged


def _weighted(ratio: float) -> Callable[[str], tuple[float, float]]:
    return lambda _key: (ratio, 1.0 - ratio)


def _difference(multiplier: float) -> Callable[[str], tuple[float, float]]:
    return lambda _key: (multiplier, -multiplier)


def _sum(_key: str) -> tuple[float, float]:
    return (1.0, 1.0)


@loom.node("ModelMergeSimple", category=CATEGORY, v3=True)
class ModelMergeSimple:
    # ratio * model1 + (1 - ratio) * model2, weight by weight

    model1: Model
    model2: Model
    ratio: float = ui.float(1.0, min=0.0, max=1.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Model:
        return merge_models("ModelMergeSimple", self.model1, self.model2, _weighted(self.ratio))


@loom.node("ModelMergeBlocks", category=CATEGORY, v3=True)
class ModelMergeBlocks:
    # ModelMergeSimple with a ratio per part: input_blocks, middle_block, out (and
    # output_blocks); weights outside them take the input ratio

    model1: Model
    model2: Model
    input: float = ui.float(1.0, min=0.0, max=1.0, step=0.01)
    middle: float = ui.float(1.0, min=0.0, max=1.0, step=0.01)
    out: float = ui.float(1.0, min=0.0, max=1.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Model:
        from loom.memory import block_ratio, ratio_scales

        ratios = {"input": self.input, "middle": self.middle, "out": self.out}
        scales = ratio_scales(block_ratio(ratios))
        return merge_models("ModelMergeBlocks", self.model1, self.model2, scales)


@loom.node("ModelMergeSubtract", category=CATEGORY, v3=True)
class ModelMergeSubtract:
    # multiplier * (model1 - model2)

    model1: Model
    model2: Model
    multiplier: float = ui.float(1.0, min=-10.0, max=10.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Model:
        scales = _difference(self.multiplier)
        return merge_models("ModelMergeSubtract", self.model1, self.model2, scales)


@loom.node("ModelMergeAdd", category=CATEGORY, v3=True)
class ModelMergeAdd:
    # model1 + model2

    model1: Model
    model2: Model

    def run(self, ctx: loom.RunContext) -> Model:
        return merge_models("ModelMergeAdd", self.model1, self.model2, _sum)


@loom.node("CLIPMergeSimple", category=CATEGORY, v3=True)
class CLIPMergeSimple:
    # ratio * clip1 + (1 - ratio) * clip2

    clip1: Clip
    clip2: Clip
    ratio: float = ui.float(1.0, min=0.0, max=1.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Clip:
        return merge_clips(ctx, "CLIPMergeSimple", self.clip1, self.clip2, _weighted(self.ratio))


@loom.node("CLIPMergeSubtract", category=CATEGORY, v3=True)
class CLIPMergeSubtract:
    # multiplier * (clip1 - clip2)

    clip1: Clip
    clip2: Clip
    multiplier: float = ui.float(1.0, min=-10.0, max=10.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Clip:
        scales = _difference(self.multiplier)
        return merge_clips(ctx, "CLIPMergeSubtract", self.clip1, self.clip2, scales)


@loom.node("CLIPMergeAdd", category=CATEGORY, v3=True)
class CLIPMergeAdd:
    # clip1 + clip2

    clip1: Clip
    clip2: Clip

    def run(self, ctx: loom.RunContext) -> Clip:
        return merge_clips(ctx, "CLIPMergeAdd", self.clip1, self.clip2, _sum)


NODES: tuple[type, ...] = (
    ModelMergeSimple,
    ModelMergeBlocks,
    ModelMergeSubtract,
    ModelMergeAdd,
    CLIPMergeSimple,
    CLIPMergeSubtract,
    CLIPMergeAdd,
)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in NODES:
        register(node_class, python_module=COMFY_MODULE)
