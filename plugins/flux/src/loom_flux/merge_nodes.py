"""``ModelMergeFlux1``: per-block merging of two Flux.1 transformers (loom-sd15's
:class:`BlockMerge`)."""

from __future__ import annotations

from loom_sd15.merge_nodes import BlockMerge


class ModelMergeFlux1(BlockMerge):
    """Flux.1 parts: the input embedders, 19 double and 38 single blocks, the final layer."""

    BLOCKS = (
        "img_in.",
        "time_in.",
        "guidance_in",
        "vector_in.",
        "txt_in.",
        *(f"double_blocks.{i}." for i in range(19)),
        *(f"single_blocks.{i}." for i in range(38)),
        "final_layer.",
    )
