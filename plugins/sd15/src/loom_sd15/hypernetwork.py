"""A1111-format hypernetworks (``HypernetworkLoader``) for SD1.x and SDXL UNets.

A hypernetwork holds, per attention context width ``dim`` (768 for SD1.x text, 320/640/1280
for SD1.x's self-attention tokens ...), two small MLPs: one rewrites an attention's key
input, the other its value input, as ``k + mlp_k(k) * strength`` (ComfyUI applies them to
both ``attn1`` and ``attn2``; an input whose width has no MLP is left alone).

Only safetensors are read. The keys flatten A1111's ``.pt`` layout,
``<dim>.<0 key | 1 value>.linear.<n>.(weight|bias)`` with ``n`` the index in the MLP's
``nn.Sequential``; the structure flags A1111 stores beside the weights are string metadata:
``activation_func`` (``linear``, ``relu``, ``leakyrelu``, ``elu``, ``swish``, ``tanh``,
``sigmoid``, ``softsign``, ``mish``), ``is_layer_norm`` and ``activate_output`` (``true`` /
``false``). The MLP is built by ComfyUI's rule: the ``.weight`` tensors in order alternate
linear and (with ``is_layer_norm``) layer norm; a linear is followed by the activation unless
it is the last entry and ``activate_output`` is off, then by its layer norm. Dropout (training
only) is left out: inference is deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs
import torch
from torch import nn

from loom.errors import ModelFileError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "linear": nn.Identity,
    "relu": nn.ReLU,
    "leakyrelu": nn.LeakyReLU,
    "elu": nn.ELU,
    "swish": nn.Hardswish,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softsign": nn.Softsign,
    "mish": nn.Mish,
}
_KEY = re.compile(r"^(\d+)\.([01])\.linear\.(\d+)\.(weight|bias)$")


def _flag(metadata: Mapping[str, str], name: str, path: Path) -> bool:
    value = metadata.get(name, "false").strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise ModelFileError(
            f"hypernetwork {path.name}: metadata {name}={metadata[name]!r} is not true or false"
        )
    return value in ("true", "1")


def _mlp(
    layers: Mapping[int, Mapping[str, torch.Tensor]],
    activation: str,
    layer_norm: bool,
    activate_output: bool,
) -> nn.Sequential:
    names = sorted(layers)
    modules: list[nn.Module] = []
    i = 0
    while i < len(names):
        weight, bias = layers[names[i]]["weight"], layers[names[i]]["bias"]
        linear = nn.Linear(weight.shape[1], weight.shape[0])
        linear.load_state_dict({"weight": weight, "bias": bias})
        modules.append(linear)
        if activation != "linear" and (i != len(names) - 1 or activate_output):
            modules.append(ACTIVATIONS[activation]())
        if layer_norm:
            i += 1
            norm_state = layers[names[i]]
            norm = nn.LayerNorm(norm_state["weight"].shape[0])
            norm.load_state_dict({"weight": norm_state["weight"], "bias": norm_state["bias"]})
            modules.append(norm)
        i += 1
    return nn.Sequential(*modules).eval()


def load_hypernetwork(path: Path) -> dict[int, tuple[nn.Module, nn.Module]]:
    """``{dim: (key mlp, value mlp)}`` from a hypernetwork safetensors file."""
    from loom.memory import open_safetensors

    if path.suffix.lower() != ".safetensors":
        raise ModelFileError(
            f"hypernetwork {path.name}: only .safetensors files are loaded (a {path.suffix} "
            "file is a pickle, which Loom never loads)",
        )
    tensors = open_safetensors(path, prefetch=False)
    metadata = tensors.metadata
    activation = metadata.get("activation_func", "linear")
    if activation not in ACTIVATIONS:
        raise ModelFileError(
            f"hypernetwork {path.name}: unsupported activation_func {activation!r} "
            f"(known: {', '.join(ACTIVATIONS)})"
        )
    layer_norm = _flag(metadata, "is_layer_norm", path)
    activate_output = _flag(metadata, "activate_output", path)
    grouped: dict[int, dict[int, dict[int, dict[str, torch.Tensor]]]] = {}
    for key in tensors:
        match = _KEY.match(key)
        if match is None:
            raise ModelFileError(
                f"hypernetwork {path.name}: unexpected key {key!r} "
                "(expected <dim>.<0|1>.linear.<n>.weight / .bias)"
            )
        dim, which, n, kind = match.groups()
        entry = grouped.setdefault(int(dim), {}).setdefault(int(which), {})
        entry.setdefault(int(n), {})[kind] = tensors[key].float().clone()
    if not grouped:
        raise ModelFileError(f"hypernetwork {path.name} holds no layers")
    out: dict[int, tuple[nn.Module, nn.Module]] = {}
    for dim, pair in grouped.items():
        try:
            key_mlp, value_mlp = (
                _mlp(pair[which], activation, layer_norm, activate_output) for which in (0, 1)
            )
        except (KeyError, RuntimeError, IndexError) as exc:
            raise ModelFileError(
                f"hypernetwork {path.name}: the layers for width {dim} are incomplete or "
                f"mis-shaped ({type(exc).__name__}: {exc})"
            ) from exc
        out[dim] = (key_mlp, value_mlp)
    return out


@attrs.frozen(eq=False)
class HypernetworkPatch:
    """The :class:`loom_sd15.unet.AttentionInputPatch` of one hypernetwork at ``strength``."""

    mlps: Mapping[int, tuple[nn.Module, nn.Module]]
    strength: float

    def __call__(
        self, x: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pair = self.mlps.get(key.shape[-1])
        if pair is None:
            return x, key, value
        key_mlp, value_mlp = pair
        for mlp in pair:
            mlp.to(key.device)
        key = key + key_mlp(key.float()).to(key.dtype) * self.strength
        value = value + value_mlp(value.float()).to(value.dtype) * self.strength
        return x, key, value
