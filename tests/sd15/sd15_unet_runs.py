"""Loading a tiny UNet file through UNETLoader and running one forward: what the quantised
weight tests (scaled fp8, NVFP4, MXFP8) compare against the dequantised twin."""

from __future__ import annotations

import torch

from loom.testing import make_context


def load_unet(runtime, name: str, weight_dtype: str = "default"):
    """``models/diffusion_models/<name>`` through UNETLoader."""
    from loom.nodes.builtin.loaders import UNETLoader

    return UNETLoader(unet_name=name, weight_dtype=weight_dtype).run(make_context(runtime))


def unet_forward(runtime, model) -> torch.Tensor:
    """One seeded forward of ``model`` (loaded for it, unloaded after)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 8, 8, generator=g)
    context = torch.randn(1, 5, model.module.config.context_dim, generator=g)
    runtime.memory.load([model])
    out = model.apply_model(x, torch.tensor([2.0]), {"c_crossattn": context})
    runtime.memory.unload_all()
    return out
