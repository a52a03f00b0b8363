"""SDXL's two text encoders as one CLIP socket value, encoded exactly as ComfyUI does.

Base: CLIP-L (``CLIPTextModel``) and OpenCLIP bigG (``CLIPTextModelWithProjection``); refiner:
bigG alone. Both tokenize with CLIP-L's vocabulary; CLIP-L pads with its end token, CLIP-G with
0. Each gives its penultimate hidden states without the final layer norm (``CLIPSetLastLayer``
picks another layer for both); the conditioning is L ‖ G along features (768 + 1280 = 2048,
cut to the shorter token count) and the pooled vector is CLIP-G's (last hidden state at the
first end token, ``ln_final`` applied, then ``text_projection``). Token weights and textual
inversion come from :mod:`loom_sd15.clip` / :mod:`loom_sd15.prompt`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs
import torch
from loom_sd15.clip import TextEncoderConfig, weighted_encode
from loom_sd15.prompt import PromptTokenizer, WeightedChunk, without_word
from loom_sd15.tokenizer import TokenizerSource, special_tokens, word_ids
from torch import nn

from loom.errors import LoomError
from loom.memory import ComputeTarget, MemoryManager, ModelHandle, cpu_device
from loom_sdxl.convert import (
    BASE_CLIP_G_PREFIX,
    BASE_CLIP_L_PREFIX,
    REFINER_CLIP_G_PREFIX,
    OpenClipConversion,
)

#: ComfyUI's default layer for both SDXL encoders: the penultimate one.
DEFAULT_LAYER = -2
CLIP_G_PAD = 0
CHECKPOINT_PREFIX = "conditioner.embedders."
#: CLIP-L's position ids, which ComfyUI writes into saved SDXL checkpoints (int64 ``[1, 77]``).
POSITION_IDS = "text_model.embeddings.position_ids"


class DualTextEncoder(nn.Module):
    """``clip_l`` (absent in refiners) and ``clip_g``: one module, so one handle loads and
    patches both (LoRA ``lora_te1_`` / ``lora_te2_`` keys land on the same clone)."""

    def __init__(self, clip_g: nn.Module, clip_l: nn.Module | None = None) -> None:
        super().__init__()
        if clip_l is not None:
            self.clip_l = clip_l
        self.clip_g = clip_g


@attrs.frozen
class SDXLTokens:
    """Weighted 77-token chunks for each encoder (``l`` is None for a refiner's CLIP)."""

    g: list[WeightedChunk]
    l: list[WeightedChunk] | None = None  # noqa: E741 - ComfyUI's key name


def pad_chunks(
    tokens: list[WeightedChunk], count: int, empty: list[WeightedChunk]
) -> list[WeightedChunk]:
    """``tokens`` followed by copies of the empty prompt's chunk up to ``count`` chunks."""
    return tokens + [list(empty[0]) for _ in range(count - len(tokens))]


class SDXLClip:
    """The CLIP socket value for SDXL: both encoders' handle, their configs and tokenizer."""

    def __init__(
        self,
        handle: ModelHandle,
        g_config: TextEncoderConfig,
        l_config: TextEncoderConfig | None,
        tokenizer: TokenizerSource,
        embedding_dirs: Sequence[Path] = (),
        memory: MemoryManager | None = None,
    ) -> None:
        self.handle = handle
        self.g_config = g_config
        self.l_config = l_config
        self.tokenizer_source = tokenizer
        self.embedding_dirs = tuple(embedding_dirs)
        # Without a runtime's manager, a CPU one (as SD15Clip): one load path.
        self.memory = memory if memory is not None else MemoryManager(cpu_device())
        self.layer_idx = DEFAULT_LAYER
        #: where the text encoders' keys sit in a single-file checkpoint
        self.checkpoint_prefix = CHECKPOINT_PREFIX

    @property
    def is_refiner(self) -> bool:
        """A refiner's CLIP: OpenCLIP bigG only, 1280-wide conditioning."""
        return self.l_config is None

    def clone(self) -> SDXLClip:
        other = SDXLClip(
            self.handle.clone(),
            self.g_config,
            self.l_config,
            self.tokenizer_source,
            self.embedding_dirs,
            self.memory,
        )
        other.layer_idx = self.layer_idx
        return other

    # --- saving -------------------------------------------------------------------------

    def text_encoder_files(self) -> dict[str, dict[str, torch.Tensor]]:
        """Each encoder's weights, patches applied, as its own file (CLIPSave): ``clip_l``
        keyed ``text_model.*`` and ``clip_g`` keyed ``text_model.*`` + ``text_projection.weight``
        (transformers' layout, as ComfyUI writes them); a refiner has ``clip_g`` only."""
        from loom.memory import patched_tensors

        files: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in patched_tensors(self.handle).items():
            role, _, rest = key.partition(".")
            if rest.endswith("position_ids"):
                continue
            if not rest.startswith(("text_model.", "text_projection.")):
                rest = f"text_model.{rest}"  # transformers builds without the text_model level
            files.setdefault(role, {})[rest] = tensor
        return dict(sorted(files.items(), key=lambda item: item[0] != "clip_l"))

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Both encoders in SDXL's single-file layout, as ComfyUI saves them: CLIP-L under
        ``conditioner.embedders.0.transformer.`` (with its ``position_ids``), OpenCLIP bigG under
        ``conditioner.embedders.1.model.`` (``embedders.0`` in a refiner) with q/k/v fused into
        ``in_proj`` and ``text_projection`` stored as ``x @ W``."""
        files = self.text_encoder_files()
        g_prefix = REFINER_CLIP_G_PREFIX if self.is_refiner else BASE_CLIP_G_PREFIX
        state = OpenClipConversion("CLIP-G", g_prefix).to_checkpoint(files["clip_g"])
        if "clip_l" in files:
            clip_l = {BASE_CLIP_L_PREFIX + key: value for key, value in files["clip_l"].items()}
            positions = files["clip_l"]["text_model.embeddings.position_embedding.weight"].shape[0]
            clip_l[BASE_CLIP_L_PREFIX + POSITION_IDS] = torch.arange(positions)[None]
            state = clip_l | state
        return state

    def set_last_layer(self, layer: int) -> None:
        """CLIPSetLastLayer, for both encoders (each falls back to its last layer)."""
        self.layer_idx = layer

    def _layer_for(self, config: TextEncoderConfig) -> int | None:
        return None if abs(self.layer_idx) > config.num_layers else self.layer_idx

    # --- tokenizing ---------------------------------------------------------------------

    def _prompt_tokenizer(self, config: TextEncoderConfig, role: str) -> PromptTokenizer:
        tokenizer = self.tokenizer_source.load()
        start, end = special_tokens(tokenizer)
        return PromptTokenizer(
            encode_text=lambda word: word_ids(tokenizer, word),
            start_token=start,
            end_token=end,
            pad_token=end if role == "clip_l" else CLIP_G_PAD,
            embedding_dirs=self.embedding_dirs,
            embedding_size=config.hidden_size,
            embedding_key=role,
            max_length=config.max_positions,
        )

    def tokenize(self, text: str) -> SDXLTokens:
        """The same text for both encoders (plain ``CLIPTextEncode``)."""
        g = self._prompt_tokenizer(self.g_config, "clip_g").tokenize(text)
        if self.l_config is None:
            return SDXLTokens(g)
        return SDXLTokens(g, self._prompt_tokenizer(self.l_config, "clip_l").tokenize(text))

    def tokenize_without_word(self, text: str, word_id: int) -> SDXLTokens:
        """:meth:`tokenize` with the tokens of ComfyUI word id ``word_id`` removed from each
        chunk of each encoder (:func:`loom_sd15.prompt.without_word`)."""
        g = self._prompt_tokenizer(self.g_config, "clip_g").tokenize_with_word_ids(text)
        if self.l_config is None:
            return SDXLTokens(without_word(g, word_id))
        l_ids = self._prompt_tokenizer(self.l_config, "clip_l").tokenize_with_word_ids(text)
        return SDXLTokens(without_word(g, word_id), without_word(l_ids, word_id))

    def tokenize_pair(self, text_g: str, text_l: str) -> SDXLTokens:
        """``text_g`` for CLIP-G, ``text_l`` for CLIP-L; the shorter padded with empty chunks."""
        if self.l_config is None:
            raise LoomError(
                "this CLIP is an SDXL refiner's (OpenCLIP bigG only): it has no CLIP-L for text_l",
                hint="use CLIPTextEncodeSDXLRefiner with a refiner, or load the base checkpoint",
            )
        g = self.tokenize(text_g).g
        tokens_l = self._prompt_tokenizer(self.l_config, "clip_l")
        l_chunks = tokens_l.tokenize(text_l)
        if len(l_chunks) != len(g):
            count = max(len(l_chunks), len(g))
            g = pad_chunks(g, count, self.tokenize("").g)
            l_chunks = pad_chunks(l_chunks, count, tokens_l.tokenize(""))
        return SDXLTokens(g, l_chunks)

    # --- encoding -----------------------------------------------------------------------

    def _prepare(self) -> ComputeTarget:
        """Load both encoders (with their patches); where and how they compute."""
        self.memory.load([self.handle])
        return self.handle.compute_target

    @torch.inference_mode()
    def encode_from_tokens(self, tokens: SDXLTokens) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cond [1, T, 2048 or 1280], pooled [1, projection])`` on the CPU, float32."""
        device = self._prepare().device
        module: DualTextEncoder = self.handle.module
        g = self.g_config
        g_out, g_last = weighted_encode(
            module.clip_g,
            tokens.g,
            self._layer_for(g),
            g.start_token,
            g.end_token,
            device,
            pad_token=CLIP_G_PAD,
            layer_norm_hidden=False,
        )
        pooled = module.clip_g.text_projection(g_last.to(device)).float()
        if self.l_config is None or tokens.l is None:
            return g_out.cpu(), pooled.cpu()
        l_cfg = self.l_config
        l_out, _ = weighted_encode(
            module.clip_l,
            tokens.l,
            self._layer_for(l_cfg),
            l_cfg.start_token,
            l_cfg.end_token,
            device,
            layer_norm_hidden=False,
        )
        cut = min(l_out.shape[1], g_out.shape[1])
        cond = torch.cat([l_out[:, :cut], g_out[:, :cut]], dim=-1)
        return cond.cpu(), pooled.cpu()

    def encode(self, text: str) -> list:
        cond, pooled = self.encode_from_tokens(self.tokenize(text))
        return [[cond, {"pooled_output": pooled}]]
