"""Per-call options of the Flux DiT that MODEL-patching nodes set on a handle.

:class:`BlockSkip` names double / single blocks a forward passes over (ComfyUI's
``"dit"`` ``double_block`` / ``single_block`` replacements returning their input, as
SkipLayerGuidanceDiT installs); :class:`RopeScale` scales and shifts the image tokens'
rotary position ids (ComfyUI's ``rope_options``, set by ScaleROPE). Torch-free, so nodes
build them at registration-free cost.
"""

from __future__ import annotations

import re

import attrs

from loom.errors import LoomError


@attrs.frozen
class BlockSkip:
    """Double and single blocks the DiT skips: their input passes through unchanged
    (ControlNet residuals after a skipped block are still added, as ComfyUI does)."""

    double: frozenset[int] = attrs.field(default=frozenset(), converter=frozenset)
    single: frozenset[int] = attrs.field(default=frozenset(), converter=frozenset)

    def __bool__(self) -> bool:
        return bool(self.double or self.single)


def parse_layers(text: str, *, node: str, input_name: str) -> tuple[int, ...]:
    """Block indices from ComfyUI's ``"7, 8, 9"`` text: the numbers it holds, in order.

    Empty text (or only separators) means no block. ComfyUI keeps any digits it finds and
    drops everything else; text with anything but digits, commas, semicolons and spaces is
    refused here, naming the node and input, rather than guessed at.
    """
    if re.fullmatch(r"[\d\s,;]*", text or "") is None:
        raise LoomError(
            f"{node}: {input_name} {text!r} is not a list of block numbers",
            hint='write the block indices separated by commas, e.g. "7, 8, 9" (empty: none)',
        )
    return tuple(int(number) for number in re.findall(r"\d+", text or ""))


@attrs.frozen
class RopeScale:
    """ScaleROPE's factors: image position ids along x (columns), y (rows) and t (time).

    For Flux (ComfyUI's ``process_img``) rows become ``shift_y + offset + i * scale_y``,
    spread with ``linspace`` over the scaled extent; columns likewise; the time id is
    shifted by ``shift_t`` (``scale_t`` has no effect on Flux's single-frame images).
    """

    scale_x: float = 1.0
    shift_x: float = 0.0
    scale_y: float = 1.0
    shift_y: float = 0.0
    scale_t: float = 1.0
    shift_t: float = 0.0
