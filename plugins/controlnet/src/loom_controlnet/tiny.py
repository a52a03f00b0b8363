"""Tiny ControlNet files with random weights, for tests and benchmarks.

:func:`controlnet_state` builds the real :class:`~loom_controlnet.model.ControlNet` for a UNet
config (seeded; zero convolutions random too, so the residuals are not zero) and returns its
weights in the original (``control_model.*``) or diffusers layout.
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
