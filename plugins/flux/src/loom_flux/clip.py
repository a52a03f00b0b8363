"""The CLIP socket value for Flux: T5-XXL for the token sequence, CLIP-L for the pooled vector.

As ComfyUI's ``FluxClipModel``: the conditioning tensor is T5's output ``[1, T, 4096]`` (T at
least 256), ``pooled_output`` is CLIP-L's pooled output of the first 77-token chunk, without a
text projection. The CLIP-L half is loom-sd15's :class:`~loom_sd15.clip.SD15Clip`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from loom_sd15.clip import SD15Clip
from loom_sd15.prompt import PromptTokenizer

from loom.errors import LoomError
from loom.memory import MemoryManager, ModelHandle, cpu_device
from loom.types import TokenizerPadding
from loom_flux.t5 import (
    load_t5_tokenizer,
    t5_encode,
    t5_tokenize,
    t5_word_ids,
)

CHECKPOINT_PREFIX = "text_encoders."
TIED_EMBEDDING = "encoder.embed_tokens.weight"


class FluxClip:
    """T5 handle + tokenizer folder, and a CLIP-L :class:`SD15Clip` (either may be missing)."""

    def __init__(
        self,
        t5: ModelHandle | None,
        tokenizer_dir: Path | None,
        clip_l: SD15Clip | None,
        memory: Any = None,
    ) -> None:
        self.t5 = t5
        self.tokenizer_dir = tokenizer_dir
        self.clip_l = clip_l
        self.memory = memory if memory is not None else MemoryManager(cpu_device())
        #: T5TokenizerOptions' padding for T5 (None: ComfyUI's default, 256 tokens at least)
        self.t5_padding: TokenizerPadding | None = None
        #: where the text encoders' keys sit in ComfyUI's all-in-one checkpoints
        self.checkpoint_prefix = CHECKPOINT_PREFIX

    def text_encoder_files(self) -> dict[str, dict[str, torch.Tensor]]:
        """Each encoder's weights, patches applied, as ComfyUI's CLIPSave writes them:
        ``clip_l`` keyed ``text_model.*``, ``t5xxl`` keyed ``encoder.*`` + ``shared.weight``
        (a scaled-fp8 T5 with ComfyUI's ``weight_scale`` / ``input_scale`` / ``comfy_quant``
        tensors)."""
        from loom.memory import patched_tensors, quant_config_tensors

        files = {}
        if self.clip_l is not None:
            files.update(self.clip_l.text_encoder_files())
        if self.t5 is not None:
            t5 = patched_tensors(self.t5) | quant_config_tensors(self.t5.module)
            t5.pop(TIED_EMBEDDING, None)  # the same tensor as shared.weight
            files["t5xxl"] = t5
        return files

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Both encoders under ``text_encoders.<name>.transformer.``, as in ComfyUI's
        all-in-one Flux checkpoints."""
        return {
            f"{self.checkpoint_prefix}{name}.transformer.{key}": value
            for name, tensors in self.text_encoder_files().items()
            for key, value in tensors.items()
        }

    def clone(self) -> FluxClip:
        other = FluxClip(
            self.t5.clone() if self.t5 is not None else None,
            self.tokenizer_dir,
            self.clip_l.clone() if self.clip_l is not None else None,
            self.memory,
        )
        other.t5_padding = self.t5_padding
        return other

    def set_tokenizer_padding(self, encoder: str, padding: TokenizerPadding) -> None:
        """T5TokenizerOptions (:class:`loom.types.TokenizerOptions`): ``"t5xxl"`` is T5's."""
        if encoder == "t5xxl":
            self.t5_padding = padding

    def set_last_layer(self, layer: int) -> None:
        """CLIPSetLastLayer reaches CLIP-L only (T5 always gives its last layer)."""
        if self.clip_l is not None:
            self.clip_l.set_last_layer(layer)

    def tokenize_t5(self, text: str) -> list[tuple[Any, float]]:
        tokenizer = load_t5_tokenizer(self.tokenizer_dir)
        prompt = PromptTokenizer(
            encode_text=lambda words: t5_word_ids(tokenizer, words),
            start_token=-1,
            end_token=1,
            pad_token=0,
            embedding_size=4096,
            embedding_key="t5xxl",
        )
        padding = self.t5_padding
        if padding is None:
            return t5_tokenize(prompt.groups(text))
        return t5_tokenize(prompt.groups(text), padding.min_padding, padding.min_length)

    @torch.inference_mode()
    def encode_t5(self, text: str) -> torch.Tensor:
        if self.t5 is None:
            raise LoomError(
                "this Flux text encoder has no T5-XXL",
                hint="load t5xxl_*.safetensors with clip_l.safetensors in DualCLIPLoader type=flux",
            )
        self.memory.load([self.t5])
        row = self.tokenize_t5(text)
        return t5_encode(self.t5.module, row, self.t5.compute_target.device).cpu()

    def encode_pooled(self, text: str) -> torch.Tensor:
        if self.clip_l is None:
            raise LoomError(
                "this Flux text encoder has no CLIP-L, which gives Flux its pooled vector",
                hint="load clip_l.safetensors with the T5 file in DualCLIPLoader type=flux",
            )
        _, pooled = self.clip_l.encode_from_tokens(self.clip_l.tokenize(text))
        return pooled

    def encode_flux(self, clip_l_text: str, t5_text: str) -> list:
        """``CLIPTextEncodeFlux``'s two prompts: T5 tokens and CLIP-L pooled vector."""
        cond = self.encode_t5(t5_text)
        return [[cond, {"pooled_output": self.encode_pooled(clip_l_text)}]]

    def encode(self, text: str) -> list:
        return self.encode_flux(text, text)
