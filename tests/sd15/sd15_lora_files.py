"""The tiny SD1.x diffusion-model file and kohya LoRA the LoRA-merge tests load (a module of
its own, as ``sd15_markers``: importing from ``conftest`` by name is ambiguous)."""

from __future__ import annotations

from pathlib import Path

import torch
from loom_sd15.tiny import checkpoint_state, save_checkpoint, tiny_spec

UNET_PREFIX = "model.diffusion_model."
UNET_FILE = "tiny-unet.safetensors"
LORA_FILE = "l.safetensors"
#: (the LoRA's kohya name, the UNet weight it patches): a linear layer and a 3x3 convolution
LAYERS = (
    (
        "lora_unet_input_blocks_3_1_transformer_blocks_0_attn2_to_k",
        "input_blocks.3.1.transformer_blocks.0.attn2.to_k.weight",
    ),
    ("lora_unet_input_blocks_1_0_in_layers_2", "input_blocks.1.0.in_layers.2.weight"),
)
RANK = 2


def write_tiny_unet(base: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Save a tiny SD1.5 UNet (seed 0) in ``dtype`` as ``models/diffusion_models/UNET_FILE``
    under ``base``, keys without the checkpoint prefix; return its tensors."""
    state = checkpoint_state(tiny_spec(), seed=0)
    unet = {
        key[len(UNET_PREFIX) :]: value.to(dtype)
        for key, value in state.items()
        if key.startswith(UNET_PREFIX)
    }
    save_checkpoint(base / "models" / "diffusion_models" / UNET_FILE, unet)
    return unet


def write_lora(
    base: Path,
    unet: dict[str, torch.Tensor],
    dtype: torch.dtype,
    *,
    scale: float = 1.0,
    alpha: float | None = None,
    layers: tuple[tuple[str, str], ...] = LAYERS,
) -> dict[str, torch.Tensor]:
    """Save a rank-``RANK`` kohya LoRA for ``layers`` of ``unet`` as ``models/loras/LORA_FILE``
    under ``base``: random ``lora_up``/``lora_down`` (seed 7) times ``scale``, cast to
    ``dtype``, with an ``alpha`` where given; return its tensors."""
    generator = torch.Generator().manual_seed(7)
    lora = {}
    for name, key in layers:
        shape = unet[key].shape
        kernel = [1, 1] if len(shape) == 4 else []
        up = torch.randn(shape[0], RANK, *kernel, generator=generator) * scale
        down = torch.randn(RANK, *shape[1:], generator=generator) * scale
        lora[f"{name}.lora_up.weight"] = up.to(dtype)
        lora[f"{name}.lora_down.weight"] = down.to(dtype)
        if alpha is not None:
            lora[f"{name}.alpha"] = torch.tensor(alpha)
    save_checkpoint(base / "models" / "loras" / LORA_FILE, lora)
    return lora
