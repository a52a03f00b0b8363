"""Tiny SD1.5-layout checkpoints with random weights, for tests, the demo and benchmarks.

:func:`tiny_checkpoint_state` builds the three real architectures at toy widths (seeded,
PyTorch's default init) and returns one state dict in the original checkpoint layout;
:func:`save_checkpoint` writes it as safetensors. The same code, given the full-size
configs, writes a random-weight SD1.5 checkpoint (the benchmark does).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch

from loom_sd15.clip import TextEncoderConfig, build_text_encoder
from loom_sd15.convert import CLIP_PREFIX, clip_conversion, unet_conversion, vae_conversion
from loom_sd15.unet import SD15_UNET, UNetConfig, UNetModel
from loom_sd15.vae import SD15_VAE, AutoencoderKL, VAEConfig


@attrs.frozen
class CheckpointSpec:
    unet: UNetConfig
    vae: VAEConfig
    clip: TextEncoderConfig


def tiny_spec(vocab_size: int = 49408, context: int = 32) -> CheckpointSpec:
    """Toy widths with SD1.5's structure: 2 UNet levels (attention on the lower one), an 8x
    VAE, 2 CLIP layers."""
    return CheckpointSpec(
        unet=UNetConfig(
            model_channels=32,
            channel_mult=(1, 2),
            num_res_blocks=1,
            attention_levels=(1,),
            num_heads=8,
            context_dim=context,
        ),
        vae=VAEConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1),
        clip=TextEncoderConfig(
            vocab_size=vocab_size,
            hidden_size=context,
            intermediate_size=context * 2,
            num_layers=2,
            start_token=vocab_size - 2,
            end_token=vocab_size - 1,
        ),
    )


def full_spec() -> CheckpointSpec:
    return CheckpointSpec(SD15_UNET, SD15_VAE, TextEncoderConfig())


def _randomize(module: torch.nn.Module, generator: torch.Generator, std: float) -> None:
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, std * 0.1, generator=generator)
            elif "norm" in name and param.ndim == 1:
                param.normal_(1.0, 0.05, generator=generator)
            else:
                fan_in = max(1, param[0].numel()) if param.ndim > 1 else 1
                param.normal_(0.0, min(std, fan_in**-0.5), generator=generator)


def checkpoint_state(
    spec: CheckpointSpec, seed: int = 0, dtype: torch.dtype = torch.float32, std: float = 0.2
) -> dict[str, torch.Tensor]:
    """Random weights for ``spec`` in the checkpoint layout (``model.diffusion_model.*`` ...)."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    with torch.device("meta"):
        unet, vae, clip = (
            UNetModel(spec.unet),
            AutoencoderKL(spec.vae),
            build_text_encoder(spec.clip),
        )
    for module, conversion in (
        (unet, unet_conversion()),
        (vae, vae_conversion()),
        (clip, clip_conversion(CLIP_PREFIX, hasattr(clip, "text_model"), True)),
    ):
        module.to_empty(device="cpu")
        _randomize(module, generator, std)
        tensors = {k: v.detach().to(dtype).contiguous() for k, v in module.state_dict().items()}
        state.update(conversion.to_checkpoint(tensors))
    return state


def save_checkpoint(
    path: Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    from loom.memory import write_safetensors

    return write_safetensors(path, state, metadata)


def write_tiny_checkpoint(
    path: Path,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    vocab_size: int = 49408,
    metadata: Mapping[str, str] | None = None,
    **spec_args: Any,
) -> Path:
    spec = tiny_spec(vocab_size=vocab_size, **spec_args)
    return save_checkpoint(path, checkpoint_state(spec, seed, dtype), metadata)


def gligen_state(
    unet: UNetConfig, text_dim: int, seed: int = 0, std: float = 0.2
) -> dict[str, torch.Tensor]:
    """Random GLIGEN weights for a UNet of ``unet``'s shape, in the GLIGEN file layout
    (``position_net.*`` and ``<block>.1.transformer_blocks.0.fuser.*``): one fuser per
    spatial transformer, object tokens ``unet.context_dim`` wide, phrases ``text_dim`` wide."""
    from loom_sd15.gligen import FuserShape, GligenNet
    from loom_sd15.unet import SpatialTransformer

    with torch.device("meta"):
        model = UNetModel(unet)
    prefixes = [
        (f"{name}.transformer_blocks.0.fuser.", module.transformer_blocks[0].attn1.to_q.in_features)
        for name, module in model.named_modules()
        if isinstance(module, SpatialTransformer)
    ]
    shapes = [FuserShape(prefix, width, unet.context_dim) for prefix, width in prefixes]
    net = GligenNet(shapes, text_dim, unet.context_dim)
    _randomize(net, torch.Generator().manual_seed(seed), std)
    state = {
        k: v.detach().contiguous()
        for k, v in net.position_net.state_dict(prefix="position_net.").items()
    }
    for shape, fuser in zip(shapes, net.fusers, strict=True):
        state.update(
            {shape.prefix + k: v.detach().contiguous() for k, v in fuser.state_dict().items()}
        )
    return state
