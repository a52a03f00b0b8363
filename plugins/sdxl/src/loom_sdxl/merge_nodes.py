"""``ModelMergeSDXL``: per-block merging of two SDXL UNets (loom-sd15's :class:`BlockMerge`)."""

from __future__ import annotations

from loom_sd15.merge_nodes import BlockMerge


class ModelMergeSDXL(BlockMerge):
    """SDXL UNet blocks: time and label embeddings, 9 input, 3 middle and 9 output blocks, out.

    The block names carry no trailing dot, as ComfyUI's do not (``input_blocks.1`` also
    prefixes nothing else in a 9-block UNet).
    """

    BLOCKS = (
        "time_embed.",
        "label_emb.",
        *(f"input_blocks.{i}" for i in range(9)),
        *(f"middle_block.{i}" for i in range(3)),
        *(f"output_blocks.{i}" for i in range(9)),
        "out.",
    )
