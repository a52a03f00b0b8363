"""ComfyUI's ``comfy_extras.nodes_cond``: ``CLIPTextEncodeControlnet`` (text a control model
attends to instead of the prompt's) and ``T5TokenizerOptions`` (how T5 pads a prompt).

Both only use core's protocols (:class:`~loom.types.ClipLike`,
:class:`~loom.types.TokenizerOptions`); the family that loaded the CLIP does the work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import loom
from loom import ui
from loom.errors import LoomError
from loom.hooks import plain_encoder
from loom.types import (
    CONTROL_CROSS_ATTN_OPTION,
    CONTROL_POOLED_OPTION,
    Clip,
    Conditioning,
    TokenizerOptions,
    TokenizerPadding,
)

COMFY_MODULE = "comfy_extras.nodes_cond"
CATEGORY = "_for_testing/conditioning"
#: ComfyUI's names of the T5 encoders whose padding T5TokenizerOptions sets.
T5_ENCODERS = ("t5xxl", "pile_t5xl", "t5base", "mt5xl", "umt5xxl")


def _require_clip(node: str, clip: Any) -> Any:
    if clip is None or not callable(getattr(clip, "encode", None)):
        raise LoomError(
            f"{node}: input 'clip' is not a text encoder ({type(clip).__name__})",
            hint="connect the CLIP output of a checkpoint or CLIP loader",
        )
    return clip


@loom.node("CLIPTextEncodeControlnet", category=CATEGORY, experimental=True, v3=True)
class CLIPTextEncodeControlnet:
    """Encode ``text`` and give it to every entry of ``conditioning`` as the text its control
    models (ControlNets) attend to, instead of the entry's own prompt."""

    clip: Clip = ui.input()
    conditioning: Conditioning = ui.input()
    text: str = ui.string(None, multiline=True, dynamic_prompts=True)

    def run(self, ctx: loom.RunContext) -> Conditioning:
        clip = _require_clip("CLIPTextEncodeControlnet", self.clip)
        # ComfyUI encodes with encode_from_tokens: a hooked CLIP's weights, unscheduled
        encoded = plain_encoder(clip).encode(self.text)
        cross_attn, options = encoded[0][0], encoded[0][1]
        pooled = options.get("pooled_output")
        out = []
        for tensor, entry_options in self.conditioning:
            entry = dict(entry_options)
            entry[CONTROL_CROSS_ATTN_OPTION] = cross_attn
            entry[CONTROL_POOLED_OPTION] = pooled
            out.append([tensor, entry])
        return out


@loom.node("T5TokenizerOptions", category=CATEGORY, experimental=True, v3=True)
class T5TokenizerOptions:
    """A clone of the CLIP whose T5 tokenizers pad prompts with at least ``min_padding`` pad
    tokens and to at least ``min_length`` tokens (replacing the encoder's own rule: Flux's T5
    pads to 256). A CLIP without a T5 encoder is returned unchanged (a clone), as in ComfyUI."""

    clip: Clip = ui.input()
    min_padding: int = ui.int(0, min=0, max=10000, step=1)
    min_length: int = ui.int(0, min=0, max=10000, step=1)

    def run(self, ctx: loom.RunContext) -> Clip:
        clip = _require_clip("T5TokenizerOptions", self.clip).clone()
        if isinstance(clip, TokenizerOptions):
            padding = TokenizerPadding(self.min_padding, self.min_length)
            for encoder in T5_ENCODERS:
                clip.set_tokenizer_padding(encoder, padding)
        return clip


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in (CLIPTextEncodeControlnet, T5TokenizerOptions):
        register(node_class, python_module=COMFY_MODULE)
