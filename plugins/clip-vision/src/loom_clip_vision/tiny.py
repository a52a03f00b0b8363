"""Tiny CLIP vision, SigLIP and Redux files with random weights, for tests and demos.

The real architectures at toy widths (seeded), written in ComfyUI's file layouts: a CLIP
vision tower with projection (``clip_vision_*.safetensors``: transformers'
``vision_model.*`` + ``visual_projection.weight``), a SigLIP tower
(``sigclip_vision_patch14_384.safetensors``: ``vision_model.*``, no class token) and a
Flux Redux style model (``redux_up`` / ``redux_down``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from loom.memory import write_safetensors
from loom_clip_vision.config import CLIP_MEAN, CLIP_STD, SIGLIP_MEAN, SIGLIP_STD, VisionConfig
from loom_clip_vision.style import ReduxConfig, ReduxEncoder


def tiny_clip_config(layers: int = 3) -> VisionConfig:
    """A 16 px CLIP tower: 4 px patches (16 + 1 tokens), 48 wide, projection to 24."""
    return VisionConfig(
        kind="clip",
        hidden_size=48,
        intermediate_size=96,
        num_layers=layers,
        patch_size=4,
        image_size=16,
        projection_dim=24,
        hidden_act="quick_gelu",
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )


def tiny_siglip_config(layers: int = 3) -> VisionConfig:
    """A 16 px SigLIP tower: 4 px patches (16 tokens), 32 wide."""
    return VisionConfig(
        kind="siglip",
        hidden_size=32,
        intermediate_size=48,
        num_layers=layers,
        patch_size=4,
        image_size=16,
        projection_dim=None,
        hidden_act="gelu_pytorch_tanh",
        image_mean=SIGLIP_MEAN,
        image_std=SIGLIP_STD,
    )


def _random_state(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, tensor in module.state_dict().items():
        if not tensor.is_floating_point():
            continue
        noise = torch.randn(tensor.shape, generator=generator) * 0.2
        is_norm_scale = "norm" in key and key.endswith(".weight")
        state[key] = (noise + 1.0 if is_norm_scale else noise).contiguous()
    return state


def vision_state(config: VisionConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict for ``config`` in ComfyUI's ``clip_vision`` layout."""
    from loom_clip_vision.config import PREFIX
    from loom_clip_vision.model import build_tower

    tower = build_tower(config)
    state = _random_state(tower, seed)
    flat = not hasattr(tower, "vision_model")
    return {
        (PREFIX + key if flat else key): value
        for key, value in state.items()
        if not key.endswith("position_ids")
    }


def redux_state(config: ReduxConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random Redux state dict (``redux_up.*``, ``redux_down.*``)."""
    return _random_state(ReduxEncoder(config), seed)


def save(state: dict[str, torch.Tensor], path: Path) -> Path:
    return write_safetensors(path, state)


def photomaker_state(
    config: VisionConfig, projection_2: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A random PhotoMaker v1 file in its converted layout: the ID encoder under
    ``id_encoder.`` (tower, ``visual_projection_2``, ``fuse_module``) beside a
    ``lora_weights.`` tensor the loader must leave alone."""
    from loom_clip_vision.photomaker import ID_ENCODER, FuseModule

    tower = vision_state(config, seed)
    dim = (config.projection_dim or 0) + projection_2
    generator = torch.Generator().manual_seed(seed + 1)
    extra = {
        "visual_projection_2.weight": torch.randn(
            projection_2, config.hidden_size, generator=generator
        )
        * 0.2
    }
    fuse = _random_state(FuseModule(dim), seed + 2)
    extra.update({f"fuse_module.{key}": value for key, value in fuse.items()})
    state = {ID_ENCODER + key: value.contiguous() for key, value in {**tower, **extra}.items()}
    state["lora_weights.unet.down.lora_A.weight"] = torch.zeros(4, 4)
    return state
