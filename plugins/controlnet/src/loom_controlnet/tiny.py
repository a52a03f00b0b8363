"""Tiny ControlNet files (SD1.x/SDXL and Flux) with random weights, for tests and benchmarks.

:func:`controlnet_state` builds the real :class:`~loom_controlnet.model.ControlNet` for a UNet
config (seeded; zero convolutions random too, so the residuals are not zero) and returns its
weights in the original (``control_model.*``) or diffusers layout; :func:`control_lora_state`
a control-LoRA file's for the same UNet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from loom_controlnet.convert import diffusers_names
from loom_controlnet.model import ControlNet, ControlNetConfig


def controlnet_state(
    unet_config: Any,
    *,
    seed: int = 0,
    layout: str = "original",
    std: float = 0.1,
    unet_class: Any = None,
) -> dict[str, torch.Tensor]:
    """Random weights of a ControlNet for ``unet_config`` in ``layout``
    (``"original"``, ``"original-bare"`` without the prefix, or ``"diffusers"``);
    ``unet_class``: loom-sdxl's ``SDXLUNetModel`` for an SDXL config."""
    config = ControlNetConfig(unet=unet_config)
    if unet_class is not None:
        config = ControlNetConfig(unet=unet_config, unet_class=unet_class)
    with torch.device("meta"):
        module = ControlNet(config)
    module.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "norm" in name and param.ndim == 1 and name.endswith("weight"):
                param.normal_(1.0, 0.05, generator=generator)
            else:
                fan_in = max(1, param[0].numel()) if param.ndim > 1 else 1
                param.normal_(0.0, min(std, fan_in**-0.5), generator=generator)
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    if layout == "original":
        return {f"control_model.{k}": v for k, v in state.items()}
    if layout == "original-bare":
        return state
    names = diffusers_names(config, len(module.zero_convs))
    out = {}
    for key, value in state.items():
        layer, _, suffix = key.rpartition(".")
        out[f"{names[layer]}.{suffix}"] = value
    return out


def write_tiny_controlnet(path: Path, unet_config: Any, **kwargs: Any) -> Path:
    from loom.memory import write_safetensors

    return write_safetensors(path, controlnet_state(unet_config, **kwargs))


def flux_controlnet_state(
    dit_config: Any,
    *,
    kind: str = "instantx",
    depth: int = 2,
    depth_single: int = 2,
    union_modes: int = 0,
    mask_channel: bool = False,
    seed: int = 0,
    std: float = 0.05,
) -> dict[str, torch.Tensor]:
    """Random weights of a Flux ControlNet whose trunk has ``dit_config``'s widths, in the
    InstantX (diffusers ``FluxControlNetModel``), XLabs (``kind="xlabs"``) or MistoLine
    (``kind="mistoline"``) layout."""
    import attrs

    from loom_controlnet.flux_model import (
        FluxControlNet,
        FluxControlNetConfig,
        instantx_plan,
        mistoline_file_key,
    )

    latent = kind == "instantx"
    hint_width = dit_config.in_channels + (4 if latent and mask_channel else 0)
    config = FluxControlNetConfig(
        attrs.evolve(dit_config, depth=depth, depth_single=depth_single),
        hint_width,
        latent_input=latent,
        union_modes=union_modes if latent else 0,
        mistoline=kind == "mistoline",
    )
    with torch.device("meta"):
        module = FluxControlNet(config)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, tensor in module.state_dict().items():
        noise = torch.randn(tensor.shape, generator=generator) * std
        state[key] = noise + 1.0 if key.endswith(".scale") else noise
    if kind == "mistoline":
        return {mistoline_file_key(k): v for k, v in state.items()}
    if not latent:
        return state
    hidden = dit_config.hidden_size
    out = {}
    for key, source in instantx_plan(config).items():
        if len(source.keys) == 1:
            out[source.keys[0]] = state[key]
            continue
        total = state[key].shape[0]
        sizes = [hidden] * 3 + ([total - 3 * hidden] if len(source.keys) == 4 else [])
        out.update(zip(source.keys, torch.split(state[key], sizes), strict=True))
    return {k: v.contiguous() for k, v in out.items()}


def write_tiny_flux_controlnet(path: Path, dit_config: Any, **kwargs: Any) -> Path:
    from loom.memory import write_safetensors

    return write_safetensors(path, flux_controlnet_state(dit_config, **kwargs))


#: Layers a tiny control-LoRA patches with low-rank pairs: a 3x3 convolution, a linear layer.
CONTROL_LORA_LAYERS = (
    "input_blocks.1.0.in_layers.2",
    "input_blocks.3.1.transformer_blocks.0.attn2.to_k",
)
#: Prefixes of the tensors a tiny control-LoRA holds in full (a replaced norm among them).
CONTROL_LORA_OWN = (
    "input_hint_block.",
    "zero_convs.",
    "middle_block_out.",
    "input_blocks.1.0.in_layers.0.",
)


def control_lora_state(
    unet_config: Any, *, seed: int = 3, rank: int = 2, std: float = 0.2
) -> dict[str, torch.Tensor]:
    """A control-LoRA file's tensors (Stability AI's layout) for ``unet_config``: the
    :data:`CONTROL_LORA_OWN` tensors of a random ControlNet in full, ``up`` / ``down`` pairs
    of ``rank`` for :data:`CONTROL_LORA_LAYERS`, and the ``lora_controlnet`` marker."""
    full = controlnet_state(unet_config, seed=seed, layout="original-bare")
    weights = {k: v for k, v in full.items() if k.startswith(CONTROL_LORA_OWN)}
    generator = torch.Generator().manual_seed(seed + 1)
    for layer in CONTROL_LORA_LAYERS:
        shape = full[f"{layer}.weight"].shape
        kernel = [1, 1] if len(shape) == 4 else []
        weights[f"{layer}.up"] = torch.randn(shape[0], rank, *kernel, generator=generator) * std
        weights[f"{layer}.down"] = torch.randn(rank, *shape[1:], generator=generator) * std
    weights["lora_controlnet"] = torch.tensor([])
    return weights
