"""T5-XXL, Flux's main text encoder: transformers' ``T5EncoderModel`` from ComfyUI's files.

ComfyUI's ``t5xxl_*.safetensors`` use transformers' own key names (``shared.weight``,
``encoder.block.N.layer.M...``), stored in fp16, fp8 (``float8_e4m3fn``) or *scaled* fp8: fp8
weights plus a per-tensor ``<layer>.scale_weight`` and a ``scaled_fp8`` marker. The module is
built on the meta device from a config read off the key shapes; its linear layers become
:data:`loom.memory.ops` layers (weights stay fp8, cast per layer to the compute dtype); the
family makes the scaled ones :class:`loom.memory.ScaledLinear` (:mod:`loom.memory.scaled`),
which multiply by their scale after the cast, exactly ComfyUI's dequantisation.

Prompts follow ComfyUI's T5 rules: emphasis as for CLIP, no start token, one end token, padded
with 0 to at least 256 tokens and never truncated, no attention mask; a weighted token becomes
``(z - z_empty) * w + z_empty`` against the encoding of an empty prompt.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from loom.memory import CastWeights, ops
from loom_flux.t5_keys import is_t5  # noqa: F401 (re-exported)
from loom_flux.t5_tokenizer import (  # noqa: F401 (re-exported)
    TOKENIZER_FILES,
    TOKENIZER_NAME,
    find_tokenizer_dir,
    packaged_tokenizer_dir,
)

log = logging.getLogger(__name__)

END_TOKEN = 1
PAD_TOKEN = 0
MIN_LENGTH = 256


@attrs.frozen
class T5Config:
    """What the weights tell about a T5 v1.1 encoder (defaults: T5-XXL)."""

    vocab_size: int = 32128
    d_model: int = 4096
    d_kv: int = 64
    d_ff: int = 10240
    num_layers: int = 24
    num_heads: int = 64
    relative_attention_num_buckets: int = 32
    gated: bool = True

    def to_transformers(self) -> Any:
        from transformers import T5Config as HFConfig

        config = HFConfig(
            vocab_size=self.vocab_size,
            d_model=self.d_model,
            d_kv=self.d_kv,
            d_ff=self.d_ff,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            relative_attention_num_buckets=self.relative_attention_num_buckets,
            relative_attention_max_distance=128,
            feed_forward_proj="gated-gelu" if self.gated else "relu",
            dropout_rate=0.0,
            is_encoder_decoder=False,
            use_cache=False,
        )
        config._attn_implementation = "eager"
        return config


def t5_config(shapes: Mapping[str, tuple[int, ...]], prefix: str = "") -> T5Config:
    """Infer the encoder config from key shapes under ``prefix``."""
    block = f"{prefix}encoder.block.0.layer."
    q = shapes[f"{block}0.SelfAttention.q.weight"]
    bias = shapes[f"{block}0.SelfAttention.relative_attention_bias.weight"]
    gated = f"{block}1.DenseReluDense.wi_0.weight" in shapes
    wi = shapes[f"{block}1.DenseReluDense.{'wi_0' if gated else 'wi'}.weight"]
    layers = 0
    while f"{prefix}encoder.block.{layers}.layer.0.SelfAttention.q.weight" in shapes:
        layers += 1
    heads = bias[1]
    shared = shapes[f"{prefix}shared.weight"]
    return T5Config(
        vocab_size=shared[0],
        d_model=shared[1],  # not q's input width: an NVFP4 file stores q packed, 2 a byte
        d_kv=q[0] // heads,
        d_ff=wi[0],
        num_layers=layers,
        num_heads=heads,
        relative_attention_num_buckets=bias[0],
        gated=gated,
    )


class T5Norm(CastWeights, nn.Module):
    """transformers' ``T5LayerNorm`` (RMS, no bias) with its weight cast like the others."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        variance = hidden.to(torch.float32).pow(2).mean(-1, keepdim=True)
        hidden = hidden * torch.rsqrt(variance + self.variance_epsilon)
        dtype = self._target_dtype(hidden)
        return self.weight.to(hidden.device, dtype) * hidden.to(dtype)


class GatedFeedForward(nn.Module):
    """transformers' ``T5DenseGatedActDense`` without its cast of the hidden states to
    ``wo``'s storage dtype (which, for fp8 storage, would round activations to fp8)."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.act(self.wi_0(hidden)) * self.wi_1(hidden)
        return self.wo(self.dropout(hidden))


class FeedForward(nn.Module):
    """transformers' ``T5DenseActDense`` (original T5, ReLU) without the same cast."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.wo(self.dropout(self.act(self.wi(hidden))))


def build_t5(config: T5Config) -> nn.Module:
    """A ``T5EncoderModel`` of cast layers (call under the meta device)."""
    from transformers import T5EncoderModel
    from transformers.models.t5.modeling_t5 import (
        T5DenseActDense,
        T5DenseGatedActDense,
        T5LayerNorm,
    )

    model = T5EncoderModel(config.to_transformers())
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = ops.Linear
        elif type(module) is nn.Embedding:
            module.__class__ = ops.Embedding
        elif isinstance(module, T5LayerNorm):
            module.__class__ = T5Norm
        elif type(module) is T5DenseGatedActDense:
            module.__class__ = type(
                "T5GatedFeedForward", (GatedFeedForward, T5DenseGatedActDense), {}
            )
        elif type(module) is T5DenseActDense:
            module.__class__ = FeedForward
    model.eval()
    return model


class T5View(Mapping[str, Any]):
    """A T5 file's tensors as the module names them: ``encoder.embed_tokens`` is ``shared``
    (a scaled-fp8 file's extra keys are :class:`loom.memory.ScaledView`'s job)."""

    def __init__(self, source: Mapping[str, Any], prefix: str = "") -> None:
        self.source = source
        self.prefix = prefix
        self._keys = [k[len(prefix) :] for k in source if k.startswith(prefix)]
        if "encoder.embed_tokens.weight" not in self._keys:
            self._keys.append("encoder.embed_tokens.weight")
        self._set = set(self._keys)

    def __getitem__(self, key: str) -> Any:
        if key not in self._set:
            raise KeyError(key)
        if key == "encoder.embed_tokens.weight" and self.prefix + key not in self.source:
            key = "shared.weight"
        return self.source[self.prefix + key]

    def __iter__(self) -> Any:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


# --- prompts ---------------------------------------------------------------------------

Token = Any  # int | torch.Tensor
WeightedTokens = list[tuple[Token, float]]


def t5_tokenize(
    groups: Sequence[Sequence[tuple[Token, float]]],
    min_padding: int = 0,
    min_length: int = MIN_LENGTH,
) -> WeightedTokens:
    """ComfyUI's T5 token row: the groups, the end token, ``min_padding`` pad tokens (0),
    then pad tokens up to ``min_length`` (256 unless T5TokenizerOptions says otherwise)."""
    row: WeightedTokens = [pair for group in groups for pair in group]
    row.append((END_TOKEN, 1.0))
    row.extend([(PAD_TOKEN, 1.0)] * min_padding)
    row.extend([(PAD_TOKEN, 1.0)] * (min_length - len(row)))
    return row


def t5_encode(
    model: nn.Module, row: WeightedTokens, device: torch.device | None = None
) -> torch.Tensor:
    """``[1, T, d_model]`` float32: the last hidden state, token weights applied."""
    ids = [[int(t) for t, _ in row]]
    weighted = any(w != 1.0 for _, w in row)
    if weighted:
        ids.append([END_TOKEN] + [PAD_TOKEN] * (len(row) - 1))
    device = device or next(model.parameters()).device
    out = model(input_ids=torch.tensor(ids, dtype=torch.long, device=device))
    z = out.last_hidden_state.float()
    cond = z[:1]
    if weighted:
        weights = torch.tensor([w for _, w in row], dtype=z.dtype, device=z.device)[None, :, None]
        cond = torch.where(weights != 1.0, (cond - z[1:]) * weights + z[1:], cond)
    return cond


# --- tokenizer files -------------------------------------------------------------------

_TOKENIZERS: dict[Path, Any] = {}


def load_t5_tokenizer(folder: Path) -> Any:
    """A ``T5TokenizerFast`` from ``folder`` (cached per folder)."""
    if folder not in _TOKENIZERS:
        from transformers import T5TokenizerFast

        _TOKENIZERS[folder] = T5TokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    return _TOKENIZERS[folder]


def t5_word_ids(tokenizer: Any, text: str) -> list[int]:
    """Ids of ``text`` without the end token (ComfyUI strips it per segment)."""
    return [int(i) for i in tokenizer(text)["input_ids"][:-1]]
