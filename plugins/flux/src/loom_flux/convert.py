"""Flux DiT weights between diffusers' layout and ComfyUI's (the one the model is built in).

diffusers' ``FluxTransformer2DModel`` splits what ComfyUI fuses (``to_q``/``to_k``/``to_v``
are one ``qkv``; a single block's q, k, v and ``proj_mlp`` are one ``linear1``) and stores
the final modulation as ``(scale, shift)`` where ComfyUI has ``(shift, scale)``. Both
directions are declared once, in :func:`key_plan`: each ComfyUI key is built from an ordered
list of diffusers keys (concatenated along dim 0), optionally with its halves swapped.
:class:`DiffusersView` applies the plan lazily (a tensor is read when it is asked for),
:func:`to_diffusers` goes the other way. No I/O, no device or dtype change.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import torch

from loom.errors import ModelFileError
from loom_flux.dit_config import FluxConfig

#: Prefix of the DiT inside ComfyUI's all-in-one checkpoints.
CHECKPOINT_PREFIX = "model.diffusion_model."


@attrs.frozen
class Source:
    """The diffusers keys one ComfyUI key is made of."""

    keys: tuple[str, ...]
    swap_halves: bool = False


def _linear(ours: str, theirs: str, plan: dict[str, Source], bias: bool = True) -> None:
    plan[f"{ours}.weight"] = Source((f"{theirs}.weight",))
    if bias:
        plan[f"{ours}.bias"] = Source((f"{theirs}.bias",))


def _fused(ours: str, parts: tuple[str, ...], plan: dict[str, Source]) -> None:
    for suffix in ("weight", "bias"):
        plan[f"{ours}.{suffix}"] = Source(tuple(f"{p}.{suffix}" for p in parts))


def key_plan(depth: int, depth_single: int, guidance: bool) -> dict[str, Source]:
    """ComfyUI key -> the diffusers keys it is built from, for a model of these depths."""
    plan: dict[str, Source] = {}
    _linear("img_in", "x_embedder", plan)
    _linear("txt_in", "context_embedder", plan)
    embedders = {"time_in": "timestep_embedder", "vector_in": "text_embedder"}
    if guidance:
        embedders["guidance_in"] = "guidance_embedder"
    for ours, theirs in embedders.items():
        _linear(f"{ours}.in_layer", f"time_text_embed.{theirs}.linear_1", plan)
        _linear(f"{ours}.out_layer", f"time_text_embed.{theirs}.linear_2", plan)
    for i in range(depth):
        o, t = f"double_blocks.{i}", f"transformer_blocks.{i}"
        _linear(f"{o}.img_mod.lin", f"{t}.norm1.linear", plan)
        _linear(f"{o}.txt_mod.lin", f"{t}.norm1_context.linear", plan)
        _fused(f"{o}.img_attn.qkv", tuple(f"{t}.attn.to_{x}" for x in "qkv"), plan)
        _fused(f"{o}.txt_attn.qkv", tuple(f"{t}.attn.add_{x}_proj" for x in "qkv"), plan)
        for stream, q, k in (("img", "norm_q", "norm_k"), ("txt", "norm_added_q", "norm_added_k")):
            plan[f"{o}.{stream}_attn.norm.query_norm.scale"] = Source((f"{t}.attn.{q}.weight",))
            plan[f"{o}.{stream}_attn.norm.key_norm.scale"] = Source((f"{t}.attn.{k}.weight",))
        _linear(f"{o}.img_attn.proj", f"{t}.attn.to_out.0", plan)
        _linear(f"{o}.txt_attn.proj", f"{t}.attn.to_add_out", plan)
        _linear(f"{o}.img_mlp.0", f"{t}.ff.net.0.proj", plan)
        _linear(f"{o}.img_mlp.2", f"{t}.ff.net.2", plan)
        _linear(f"{o}.txt_mlp.0", f"{t}.ff_context.net.0.proj", plan)
        _linear(f"{o}.txt_mlp.2", f"{t}.ff_context.net.2", plan)
    for i in range(depth_single):
        o, t = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        _linear(f"{o}.modulation.lin", f"{t}.norm.linear", plan)
        parts = (*(f"{t}.attn.to_{x}" for x in "qkv"), f"{t}.proj_mlp")
        _fused(f"{o}.linear1", parts, plan)
        plan[f"{o}.norm.query_norm.scale"] = Source((f"{t}.attn.norm_q.weight",))
        plan[f"{o}.norm.key_norm.scale"] = Source((f"{t}.attn.norm_k.weight",))
        _linear(f"{o}.linear2", f"{t}.proj_out", plan)
    for suffix in ("weight", "bias"):
        plan[f"final_layer.adaLN_modulation.1.{suffix}"] = Source(
            (f"norm_out.linear.{suffix}",), swap_halves=True
        )
    _linear("final_layer.linear", "proj_out", plan)
    return plan


def is_diffusers_layout(keys: Any, prefix: str = "") -> bool:
    return f"{prefix}x_embedder.weight" in keys and f"{prefix}context_embedder.weight" in keys


def diffusers_depths(keys: Any, prefix: str = "") -> tuple[int, int, bool]:
    """``(double blocks, single blocks, has guidance)`` of a diffusers-layout state dict."""
    depth = _count(keys, f"{prefix}transformer_blocks.", "norm1.linear.weight")
    single = _count(keys, f"{prefix}single_transformer_blocks.", "norm.linear.weight")
    guidance = f"{prefix}time_text_embed.guidance_embedder.linear_1.weight" in keys
    return depth, single, guidance


def config_from_shapes(
    shapes: Mapping[str, tuple[int, ...]],
    prefix: str = "",
    *,
    diffusers: bool,
    final_layer: bool = True,
) -> FluxConfig:
    """A DiT's :class:`FluxConfig` read off its tensor shapes, in ComfyUI's layout or (with
    ``diffusers``) diffusers' one, under ``prefix``.

    ``final_layer``: the file holds the DiT's final layer, whose width gives the output
    channels; without one (a Flux ControlNet's trunk) they equal the input channels.
    """
    p = prefix
    if diffusers:
        img_in, txt_in = shapes[f"{p}x_embedder.weight"], shapes[f"{p}context_embedder.weight"]
        vec = shapes[f"{p}time_text_embed.text_embedder.linear_1.weight"]
        head = shapes[f"{p}transformer_blocks.0.attn.norm_q.weight"][0]
        mlp = shapes[f"{p}transformer_blocks.0.ff.net.0.proj.weight"][0]
        out_key = f"{p}proj_out.weight"
        depth, single, guidance = diffusers_depths(shapes, p)
        qkv_bias = f"{p}transformer_blocks.0.attn.to_q.bias" in shapes
    else:
        img_in, txt_in = shapes[f"{p}img_in.weight"], shapes[f"{p}txt_in.weight"]
        vec = shapes[f"{p}vector_in.in_layer.weight"]
        head = shapes[f"{p}double_blocks.0.img_attn.norm.query_norm.scale"][0]
        mlp = shapes[f"{p}double_blocks.0.img_mlp.0.weight"][0]
        out_key = f"{p}final_layer.linear.weight"
        depth = _count(shapes, f"{p}double_blocks.", "img_mod.lin.weight")
        single = _count(shapes, f"{p}single_blocks.", "modulation.lin.weight")
        guidance = f"{p}guidance_in.in_layer.weight" in shapes
        qkv_bias = f"{p}double_blocks.0.img_attn.qkv.bias" in shapes
    hidden = img_in[0]
    return FluxConfig(
        in_channels=img_in[1],
        out_channels=shapes[out_key][0] if final_layer else img_in[1],
        hidden_size=hidden,
        num_heads=hidden // head,
        context_dim=txt_in[1],
        vec_dim=vec[1],
        mlp_ratio=mlp / hidden,
        depth=depth,
        depth_single=single,
        guidance_embed=guidance,
        qkv_bias=qkv_bias,
    )


def _count(keys: Any, stem: str, leaf: str) -> int:
    n = 0
    while f"{stem}{n}.{leaf}" in keys:
        n += 1
    return n


def _swap(tensor: torch.Tensor) -> torch.Tensor:
    first, second = tensor.chunk(2, dim=0)
    return torch.cat((second, first), dim=0)


class DiffusersView(Mapping[str, Any]):
    """ComfyUI-keyed lazy view of a diffusers-layout Flux state dict.

    :raises ModelFileError: (at construction) the file lacks keys the plan needs, or holds
        keys the plan does not use; one message lists both.
    """

    def __init__(self, source: Mapping[str, Any], file: str, prefix: str = "") -> None:
        self.source = source
        self.prefix = prefix
        keys = [k for k in source if k.startswith(prefix)]
        self.plan = key_plan(*diffusers_depths(set(keys), prefix))
        used = {prefix + k for s in self.plan.values() for k in s.keys}
        missing = sorted(used - set(keys))
        unexpected = sorted(set(keys) - used)
        if missing or unexpected:
            raise ModelFileError(
                f"{file}: the diffusers-layout Flux transformer does not match Flux's structure; "
                f"{len(missing)} missing keys ({', '.join(missing[:8])}), "
                f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:8])})",
                hint="the file may be truncated or a variant this plugin does not support",
            )

    def __getitem__(self, key: str) -> Any:
        source = self.plan[key]
        tensors = [self.source[self.prefix + k] for k in source.keys]
        tensor = tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=0)
        return _swap(tensor) if source.swap_halves else tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self.plan)

    def __len__(self) -> int:
        return len(self.plan)


def to_diffusers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ComfyUI-layout state dict in diffusers' layout (tests, LoRA key maps)."""
    depth = _count(state, "double_blocks.", "img_mod.lin.weight")
    single = _count(state, "single_blocks.", "modulation.lin.weight")
    plan = key_plan(depth, single, "guidance_in.in_layer.weight" in state)
    out: dict[str, torch.Tensor] = {}
    for key, source in plan.items():
        tensor = state[key]
        if source.swap_halves:
            tensor = _swap(tensor)
        if len(source.keys) == 1:
            out[source.keys[0]] = tensor
            continue
        sizes = _split_sizes(source.keys, tensor.shape[0], state, key)
        for name, part in zip(source.keys, torch.split(tensor, sizes, dim=0), strict=True):
            out[name] = part
    return out


def _split_sizes(
    keys: tuple[str, ...], total: int, state: Mapping[str, Any], key: str
) -> list[int]:
    """Row counts of a fused tensor's parts: q, k, v equal; the rest (``proj_mlp``) after."""
    if len(keys) == 3:
        return [total // 3] * 3
    dim = state[key.replace("linear1", "linear2").rsplit(".", 1)[0] + ".weight"].shape[0]
    return [dim, dim, dim, total - 3 * dim]
