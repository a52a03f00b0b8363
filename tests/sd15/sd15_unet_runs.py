"""Loading a tiny UNet file through UNETLoader, running one forward, and patching one layer
with a small LoRA: what the quantised weight tests (scaled fp8, NVFP4, MXFP8) compare
against the dequantised twin and ComfyUI's requantisation."""

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


def write_layer_lora(base_dir, layer: str, out_features: int, in_features: int):
    """Save ``models/loras/l.safetensors``: a rank-2 kohya LoRA for the linear ``layer``
    (``out_features`` x ``in_features``), random ``lora_up``/``lora_down`` (seed 4) x 0.1;
    return ``(up, down)``."""
    from loom_sd15.tiny import save_checkpoint

    g = torch.Generator().manual_seed(4)
    up = torch.randn(out_features, 2, generator=g) * 0.1
    down = torch.randn(2, in_features, generator=g) * 0.1
    name = "lora_unet_" + layer.replace(".", "_")
    save_checkpoint(
        base_dir / "models" / "loras" / "l.safetensors",
        {f"{name}.lora_up.weight": up, f"{name}.lora_down.weight": down},
    )
    return up, down


def with_lora(runtime, model):
    """``model`` patched by ``l.safetensors`` at strength 1 (LoraLoaderModelOnly)."""
    from loom_lora.nodes import LoraLoaderModelOnly

    patched = LoraLoaderModelOnly(model=model, lora_name="l.safetensors", strength_model=1.0)
    return patched.run(make_context(runtime))
