"""The CLIP text encoder: transformers' ``CLIPTextModel`` with ComfyUI's weighting.

The module is built on the meta device from a ``CLIPTextConfig`` read off the checkpoint's
key shapes, its layers switched to :data:`loom.memory.ops` (weights stay in their stored
dtype, compute happens in the compute dtype), and the checkpoint's tensors assigned.
:class:`SD15Clip` is the CLIP socket value: tokenize (:mod:`loom_sd15.prompt`), encode each
77-token chunk, apply token weights as ComfyUI's ``SDClipModel`` does
(``z = (z - z_empty) * w + z_empty``), concatenate chunks along the token axis.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from loom.memory import ComputeTarget, MemoryManager, ModelHandle, cpu_device, ops
from loom_sd15.convert import CLIP_PREFIX, clip_conversion
from loom_sd15.prompt import PromptTokenizer, WeightedChunk, without_word
from loom_sd15.tokenizer import TokenizerSource, special_tokens, word_ids

log = logging.getLogger(__name__)

_OPS = {nn.Linear: ops.Linear, nn.LayerNorm: ops.LayerNorm, nn.Embedding: ops.Embedding}


@attrs.frozen
class TextEncoderConfig:
    """What the weights tell about a CLIP text transformer (heads: 64 channels each)."""

    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_layers: int = 12
    max_positions: int = 77
    projection_dim: int | None = None
    hidden_act: str = "quick_gelu"
    start_token: int = 49406
    end_token: int = 49407

    @property
    def num_heads(self) -> int:
        return max(1, self.hidden_size // 64)

    def to_transformers(self) -> Any:
        from transformers import CLIPTextConfig

        config = CLIPTextConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            max_position_embeddings=self.max_positions,
            hidden_act=self.hidden_act,
            layer_norm_eps=1e-5,
            bos_token_id=self.start_token,
            eos_token_id=self.end_token,
            pad_token_id=self.end_token,
            projection_dim=self.projection_dim or self.hidden_size,
        )
        config._attn_implementation = "sdpa"
        return config


def build_text_encoder(config: TextEncoderConfig) -> nn.Module:
    """A ``CLIPTextModel`` whose layers cast weights on the fly (call under the meta device);
    ``CLIPTextModelWithProjection`` when the config has a ``projection_dim`` (SDXL's CLIP-G)."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModel if config.projection_dim is None else CLIPTextModelWithProjection
    model = cls(config.to_transformers())
    for module in model.modules():
        cast = _OPS.get(type(module))
        if cast is not None:
            module.__class__ = cast
    model.eval()
    return model


def materialize_buffers(model: nn.Module) -> None:
    """Non-persistent buffers are not in checkpoints: rebuild those left on meta."""
    embeddings = model.get_submodule(_embeddings_path(model))
    if embeddings.position_ids.is_meta:
        count = embeddings.position_embedding.weight.shape[0]
        embeddings.position_ids = torch.arange(count).expand((1, -1))


def _embeddings_path(model: nn.Module) -> str:
    return "text_model.embeddings" if hasattr(model, "text_model") else "embeddings"


class _ExtendedEmbedding(nn.Module):
    """The token table plus textual-inversion vectors appended after the last id."""

    def __init__(self, base: nn.Module, extra: torch.Tensor) -> None:
        super().__init__()
        self.base = base
        self.extra = extra
        self.size = base.weight.shape[0]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        is_extra = ids >= self.size
        out = self.base(ids.clamp(max=self.size - 1))
        if bool(is_extra.any()):
            rows = self.extra.to(out.device, out.dtype)[(ids - self.size).clamp(min=0)]
            out = torch.where(is_extra[..., None], rows, out)
        return out


def encode_tokens(
    model: nn.Module,
    tokens: Sequence[Sequence[Any]],
    layer_idx: int | None,
    end_token: int,
    device: torch.device | None = None,
    layer_norm_hidden: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states ``[N, T, D]`` (float32) and pooled output for token rows.

    ``layer_idx`` None uses the last layer; a negative index takes that layer's output
    (ComfyUI's ``hidden``), with the final layer norm applied as ComfyUI does for SD1.x
    (``layer_norm_hidden``; SDXL's encoders leave it out).
    """
    embeddings = model.get_input_embeddings()
    extra: list[torch.Tensor] = []
    rows = []
    for row in tokens:
        ids = []
        for token in row:
            if isinstance(token, torch.Tensor):
                ids.append(embeddings.weight.shape[0] + len(extra))
                extra.append(token)
            else:
                ids.append(int(token))
        rows.append(ids)
    device = device or embeddings.weight.device
    input_ids = torch.tensor(rows, dtype=torch.long, device=device)
    if extra:
        model.set_input_embeddings(_ExtendedEmbedding(embeddings, torch.stack(extra)))
    try:
        out = model(input_ids=input_ids, output_hidden_states=layer_idx is not None)
    finally:
        if extra:
            model.set_input_embeddings(embeddings)
    if layer_idx is None:
        z = out.last_hidden_state
    else:
        final_norm = model.get_submodule(
            "text_model.final_layer_norm" if hasattr(model, "text_model") else "final_layer_norm"
        )
        z = out.hidden_states[layer_idx]
        z = final_norm(z) if layer_norm_hidden else z
    positions = (input_ids == end_token).int().argmax(dim=-1)
    pooled = out.last_hidden_state[torch.arange(len(rows), device=device), positions]
    return z.float(), pooled.float()


def weighted_encode(
    model: nn.Module,
    chunks: list[WeightedChunk],
    layer_idx: int | None,
    start_token: int,
    end_token: int,
    device: torch.device | None = None,
    pad_token: int | None = None,
    layer_norm_hidden: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ComfyUI's ``encode_token_weights``: ``[1, 77*chunks, D]`` and the first chunk's pooled.

    The empty-prompt row weights are measured against is padded with ``pad_token`` (the end
    token unless given: SDXL's CLIP-G pads with 0)."""
    rows = [[t for t, _ in chunk] for chunk in chunks]
    weighted = any(w != 1.0 for chunk in chunks for _, w in chunk)
    if weighted or not rows:
        length = max((len(r) for r in rows), default=77)
        pad = end_token if pad_token is None else pad_token
        rows.append([start_token, end_token] + [pad] * (length - 2))
    z, pooled = encode_tokens(model, rows, layer_idx, end_token, device, layer_norm_hidden)
    outputs = []
    for k, chunk in enumerate(chunks):
        zk = z[k : k + 1]
        if weighted:
            weights = torch.tensor([w for _, w in chunk], dtype=zk.dtype, device=zk.device)
            weights = weights[None, :, None]
            z_empty = z[-1:]
            zk = torch.where(weights != 1.0, (zk - z_empty) * weights + z_empty, zk)
        outputs.append(zk)
    if not outputs:
        return z[-1:], pooled[0:1]
    return torch.cat(outputs, dim=1), pooled[0:1]


class SD15Clip:
    """The CLIP socket value for SD1.x: a text encoder handle, its tokenizer and options."""

    def __init__(
        self,
        handle: ModelHandle,
        config: TextEncoderConfig,
        tokenizer: TokenizerSource,
        embedding_dirs: Sequence[Path] = (),
        memory: MemoryManager | None = None,
    ) -> None:
        self.handle = handle
        self.config = config
        self.tokenizer_source = tokenizer
        self.embedding_dirs = tuple(embedding_dirs)
        # Without a runtime's manager, a CPU one: the same load path (patches applied,
        # device and dtype decided by a manager), not a second way to run.
        self.memory = memory if memory is not None else MemoryManager(cpu_device())
        self.layer_idx: int | None = None
        #: where the text encoder's keys sit in a single-file checkpoint
        self.checkpoint_prefix = CLIP_PREFIX

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The text encoder's weights, patches applied, as
        ``cond_stage_model.transformer.text_model.*`` (no ``position_ids``, as ComfyUI)."""
        from loom.memory import patched_tensors

        tensors = patched_tensors(self.handle)
        has_text_model = hasattr(self.handle.module, "text_model")
        conversion = clip_conversion(self.checkpoint_prefix, has_text_model, True)
        return {
            key: value
            for key, value in conversion.to_checkpoint(tensors).items()
            if not key.endswith("position_ids")
        }

    def text_encoder_files(self) -> dict[str, dict[str, torch.Tensor]]:
        """CLIP-L alone, keyed ``text_model.*`` as ComfyUI's CLIPSave writes it."""
        start = len(self.checkpoint_prefix)
        return {"clip_l": {key[start:]: value for key, value in self.checkpoint_state().items()}}

    def clone(self) -> SD15Clip:
        other = SD15Clip(
            self.handle.clone(),
            self.config,
            self.tokenizer_source,
            self.embedding_dirs,
            self.memory,
        )
        other.layer_idx = self.layer_idx
        return other

    def set_last_layer(self, layer: int) -> None:
        """CLIPSetLastLayer: ``-1`` is the last layer; beyond the depth means the last layer."""
        self.layer_idx = layer

    def _effective_layer(self) -> int | None:
        if self.layer_idx is None or abs(self.layer_idx) > self.config.num_layers:
            return None
        return self.layer_idx

    def prompt_tokenizer(self) -> PromptTokenizer:
        tokenizer = self.tokenizer_source.load()
        start, end = special_tokens(tokenizer)
        return PromptTokenizer(
            encode_text=lambda word: word_ids(tokenizer, word),
            start_token=start,
            end_token=end,
            pad_token=end,
            embedding_dirs=self.embedding_dirs,
            embedding_size=self.config.hidden_size,
            max_length=self.config.max_positions,
        )

    def tokenize(self, text: str) -> list[WeightedChunk]:
        return self.prompt_tokenizer().tokenize(text)

    def tokenize_without_word(self, text: str, word_id: int) -> list[WeightedChunk]:
        """:meth:`tokenize` with the tokens of ComfyUI word id ``word_id`` removed from each
        chunk (:func:`loom_sd15.prompt.without_word`)."""
        return without_word(self.prompt_tokenizer().tokenize_with_word_ids(text), word_id)

    def _prepare(self) -> ComputeTarget:
        """Load the encoder (with its patches) and return where and how it computes."""
        self.memory.load([self.handle])
        return self.handle.compute_target

    @torch.inference_mode()
    def encode_from_tokens(self, chunks: list[WeightedChunk]) -> tuple[torch.Tensor, torch.Tensor]:
        target = self._prepare()
        z, pooled = weighted_encode(
            self.handle.module,
            chunks,
            self._effective_layer(),
            self.config.start_token,
            self.config.end_token,
            target.device,
        )
        return z.cpu(), pooled.cpu()

    def encode(self, text: str) -> list:
        cond, pooled = self.encode_from_tokens(self.tokenize(text))
        return [[cond, {"pooled_output": pooled}]]


def text_encoder_config(shapes: Mapping[str, tuple[int, ...]], prefix: str) -> TextEncoderConfig:
    """Infer the CLIP text config from key shapes under ``prefix`` (``...transformer.``)."""
    emb = shapes[f"{prefix}embeddings.token_embedding.weight"]
    pos = shapes[f"{prefix}embeddings.position_embedding.weight"]
    fc1 = shapes[f"{prefix}encoder.layers.0.mlp.fc1.weight"]
    layers = 0
    while f"{prefix}encoder.layers.{layers}.mlp.fc1.weight" in shapes:
        layers += 1
    return TextEncoderConfig(
        vocab_size=emb[0],
        hidden_size=emb[1],
        intermediate_size=fc1[0],
        num_layers=layers,
        max_positions=pos[0],
        start_token=emb[0] - 2,
        end_token=emb[0] - 1,
    )
