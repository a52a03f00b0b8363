"""SDXL checkpoint keys to module keys: the OpenCLIP bigG layout onto transformers.

SDXL single files store CLIP-G as OpenCLIP does (``transformer.resblocks.N.attn.in_proj_weight``
with q, k and v fused, ``text_projection`` applied as ``x @ W``, ``ln_final``);
:class:`OpenClipConversion` maps it onto transformers' ``CLIPTextModelWithProjection`` lazily:
q/k/v are row slices of the fused tensor and the projection a transposed view, so nothing is
copied until the module is assigned. It has the interface of :class:`loom_sd15.convert.Conversion`
(``check``, ``view``, ``to_checkpoint``, ``source_prefix``), so the sd15 loading steps apply.
CLIP-L, the UNet and the VAE keep sd15's prefix conversions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs

from loom.errors import ModelFileError

BASE_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
BASE_CLIP_G_PREFIX = "conditioner.embedders.1.model."
REFINER_CLIP_G_PREFIX = "conditioner.embedders.0.model."

#: OpenCLIP keys (after the prefix) no inference module needs.
OPENCLIP_LEFTOVERS = (r"logit_scale", r"attn_mask")

_LAYER = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")
_LAYER_PARTS = {
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_FUSED = {"attn.in_proj_weight": "weight", "attn.in_proj_bias": "bias"}
_TOP = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
}
_TRANSPOSED = {"text_projection": "text_projection.weight"}


@attrs.frozen
class Source:
    """Where a module tensor comes from: a checkpoint key, a third of it, or its transpose."""

    key: str
    third: int | None = None  # 0, 1, 2: q, k, v rows of a fused in_proj tensor
    transpose: bool = False

    def read(self, state: Mapping[str, Any]) -> Any:
        tensor = state[self.key]
        if self.third is not None:
            rows = tensor.shape[0] // 3
            return tensor[self.third * rows : (self.third + 1) * rows]
        return tensor.t() if self.transpose else tensor


def _targets(rest: str) -> list[tuple[str, int | None, bool]] | None:
    """Module keys (with slice / transpose) one OpenCLIP key feeds; None when unknown."""
    if rest in _TOP:
        return [(_TOP[rest], None, False)]
    if rest in _TRANSPOSED:
        return [(_TRANSPOSED[rest], None, True)]
    match = _LAYER.fullmatch(rest)
    if match is None:
        return None
    layer, part = match.groups()
    base = f"text_model.encoder.layers.{layer}."
    if part in _LAYER_PARTS:
        return [(base + _LAYER_PARTS[part], None, False)]
    if part in _FUSED:
        kind = _FUSED[part]
        return [(f"{base}self_attn.{p}_proj.{kind}", i, False) for i, p in enumerate("qkv")]
    return None


@attrs.frozen
class OpenClipConversion:
    """OpenCLIP ``source_prefix + ...`` onto ``CLIPTextModelWithProjection`` keys."""

    name: str
    source_prefix: str

    def _skipped(self, rest: str) -> bool:
        return any(re.fullmatch(p, rest) for p in OPENCLIP_LEFTOVERS)

    def mapping(self, checkpoint_keys: Iterable[str]) -> tuple[dict[str, Source], list[str]]:
        """``(module key -> source, checkpoint keys that map to nothing)``."""
        sources: dict[str, Source] = {}
        unknown: list[str] = []
        for key in checkpoint_keys:
            if not key.startswith(self.source_prefix):
                continue
            rest = key[len(self.source_prefix) :]
            if self._skipped(rest):
                continue
            targets = _targets(rest)
            if targets is None:
                unknown.append(key)
                continue
            for target, third, transpose in targets:
                sources[target] = Source(key, third, transpose)
        return sources, unknown

    def check(self, checkpoint_keys: Iterable[str], module_keys: Iterable[str], file: str) -> None:
        """Raise one error naming every missing and unexpected key, if any."""
        sources, unknown = self.mapping(checkpoint_keys)
        expected = {k for k in module_keys if not k.endswith("position_ids")}
        missing = sorted(self.source_name(k) for k in expected - set(sources))
        unexpected = sorted(unknown + [sources[k].key for k in set(sources) - expected])
        if not missing and not unexpected:
            return
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_shown(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_shown(unexpected)}")
        raise ModelFileError(
            f"{file}: the {self.name} weights (under {self.source_prefix}) do not match the "
            "OpenCLIP text encoder read from the file; " + "; ".join(parts),
            hint="the file may be truncated, merged badly, or a variant this plugin does not "
            "support",
        )

    def source_name(self, target: str) -> str:
        """The checkpoint key that feeds module key ``target`` (for messages)."""
        inverse_top = {v: k for k, v in (_TOP | _TRANSPOSED).items()}
        if target in inverse_top:
            return self.source_prefix + inverse_top[target]
        match = re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)", target)
        if match is None:
            return target
        layer, part = match.groups()
        inverse_parts = {v: k for k, v in _LAYER_PARTS.items()}
        qkv = re.fullmatch(r"self_attn\.[qkv]_proj\.(weight|bias)", part)
        rest = f"attn.in_proj_{qkv[1]}" if qkv else inverse_parts.get(part, part)
        return f"{self.source_prefix}transformer.resblocks.{layer}.{rest}"

    def view(self, state: Mapping[str, Any]) -> Mapping[str, Any]:
        """Module-keyed lazy view of ``state``."""
        sources, _ = self.mapping(state.keys())
        return _View(sources, state)

    def to_checkpoint(self, module_state: Mapping[str, Any]) -> dict[str, Any]:
        """``CLIPTextModelWithProjection`` state -> OpenCLIP keys (tests, tiny checkpoints)."""
        import torch

        out: dict[str, Any] = {}
        inverse_top = {v: k for k, v in _TOP.items()}
        inverse_parts = {v: k for k, v in _LAYER_PARTS.items()}
        fused: dict[str, dict[str, Any]] = {}
        for key, tensor in module_state.items():
            if key.endswith("position_ids"):
                continue
            if key in inverse_top:
                out[self.source_prefix + inverse_top[key]] = tensor
            elif key == "text_projection.weight":
                out[self.source_prefix + "text_projection"] = tensor.t().contiguous()
            else:
                match = re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)", key)
                if match is None:
                    raise KeyError(key)
                layer, part = match.groups()
                base = f"{self.source_prefix}transformer.resblocks.{layer}."
                qkv = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", part)
                if qkv is None:
                    out[base + inverse_parts[part]] = tensor
                else:
                    fused.setdefault(f"{base}attn.in_proj_{qkv[2]}", {})[qkv[1]] = tensor
        for key, parts in fused.items():
            out[key] = torch.cat([parts["q"], parts["k"], parts["v"]]).contiguous()
        return out


class _View(Mapping[str, Any]):
    def __init__(self, sources: Mapping[str, Source], state: Mapping[str, Any]) -> None:
        self.sources = sources
        self.state = state

    def __getitem__(self, key: str) -> Any:
        return self.sources[key].read(self.state)

    def __contains__(self, key: object) -> bool:
        return key in self.sources

    def __iter__(self) -> Iterator[str]:
        return iter(self.sources)

    def __len__(self) -> int:
        return len(self.sources)


def _shown(keys: list[str], limit: int = 10) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def openclip_shapes_config(shapes: Mapping[str, tuple[int, ...]], prefix: str) -> dict[str, int]:
    """Widths and depth of an OpenCLIP text tower under ``prefix`` (keys and shapes only)."""
    emb = shapes[f"{prefix}token_embedding.weight"]
    layers = 0
    while f"{prefix}transformer.resblocks.{layers}.attn.in_proj_weight" in shapes:
        layers += 1
    projection = shapes.get(f"{prefix}text_projection")
    return {
        "vocab_size": emb[0],
        "hidden_size": emb[1],
        "intermediate_size": shapes[f"{prefix}transformer.resblocks.0.mlp.c_fc.weight"][0],
        "num_layers": layers,
        "max_positions": shapes[f"{prefix}positional_embedding"][0],
        "projection_dim": projection[1] if projection else emb[1],
    }
