"""Per-block model merging (ComfyUI's ``nodes_model_merging_model_specific``): ``ModelMergeSD1``
and :class:`BlockMerge`, the base SDXL's and Flux's block-merge nodes share.

A ratio input is named after the ComfyUI key prefix it governs (``input_blocks.4.``), which is
not a Python identifier, so these are classic node classes. A weight takes the ratio of the
longest input name its key (after ``diffusion_model.``) starts with, else the first input's
ratio; the merge is ``ratio * model1 + (1 - ratio) * model2`` (:mod:`loom.memory.merge`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from loom.errors import LoomError

MODULE = "comfy_extras.nodes_model_merging_model_specific"
CATEGORY = "advanced/model_merging/model_specific"
_RATIO = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})


class BlockMerge:
    """A classic block-merge node; a subclass lists its ratio inputs in ``BLOCKS``."""

    BLOCKS: ClassVar[tuple[str, ...]] = ()
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "merge"
    CATEGORY = CATEGORY
    COMFY_V3_SCHEMA = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        required: dict[str, Any] = {"model1": ("MODEL",), "model2": ("MODEL",)}
        required.update({name: _RATIO for name in cls.BLOCKS})
        return {"required": required}

    def merge(self, model1: Any, model2: Any, **ratios: float) -> tuple[Any]:
        from loom.memory import ModelHandle, block_ratio, merge_into, ratio_scales

        node = type(self).__name__
        for name, value in (("model1", model1), ("model2", model2)):
            if not isinstance(value, ModelHandle):
                raise LoomError(
                    f"{node}: input {name} is a {type(value).__name__}, not a model whose "
                    "weights can be merged"
                )
        ordered = {name: float(ratios[name]) for name in self.BLOCKS}
        merged = model1.clone()
        merge_into(merged, model2, ratio_scales(block_ratio(ordered)))
        return (merged,)


def _numbered(prefix: str, count: int, suffix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{i}{suffix}" for i in range(count))


class ModelMergeSD1(BlockMerge):
    """SD1.x UNet blocks: time embedding, 12 input, 3 middle and 12 output blocks, out."""

    BLOCKS = (
        "time_embed.",
        "label_emb.",
        *_numbered("input_blocks", 12, "."),
        *_numbered("middle_block", 3, "."),
        *_numbered("output_blocks", 12, "."),
        "out.",
    )
