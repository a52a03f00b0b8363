"""Tiny models and input images for ComfyUI's own workflow templates.

Every node of a template lists the files it loads in ``properties.models`` (name and
models/ folder). :func:`write_models` writes each as a tiny model of the family and layout the
real file has (an SDXL base checkpoint, a 384-channel Flux Fill DiT, a scaled-fp8 T5 ...), with
the builders the plugins ship in their ``tiny`` modules; :func:`write_inputs` writes the images
the template's LoadImage nodes name, with an alpha channel where the template uses the mask.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

TEMPLATES = Path(__file__).parent / "data" / "comfyui_templates_0_7_64"
#: SigLIP layers: USO reads hidden states -20, -11 and -2.
SIGLIP_LAYERS = 20


def load_template(name: str) -> dict[str, Any]:
    return json.loads((TEMPLATES / f"{name}.json").read_text(encoding="utf-8"))


def template_nodes(workflow: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The template's nodes and those of its subgraph definitions."""
    yield from workflow["nodes"]
    for subgraph in workflow.get("definitions", {}).get("subgraphs", []):
        yield from subgraph["nodes"]


def model_files(workflow: dict[str, Any]) -> set[tuple[str, str]]:
    """``(folder, file name)`` of every model the template's nodes list."""
    return {
        (model["directory"], model["name"])
        for node in template_nodes(workflow)
        for model in node.get("properties", {}).get("models") or []
    }


def _sd15(path: Path, name: str) -> None:
    from loom_sd15.tiny import write_tiny_checkpoint

    write_tiny_checkpoint(path, seed=0, dtype=torch.float16 if "fp16" in name else torch.float32)


def _sdxl(path: Path, name: str) -> None:
    from loom_sdxl.tiny import write_tiny_checkpoint

    dtype = torch.float16 if "fp16" in name else torch.float32
    write_tiny_checkpoint(path, seed=1, refiner="refiner" in name, dtype=dtype)


def _flux_spec(name: str):
    from loom_flux.tiny import tiny_spec

    channels = 384 if "fill" in name else 128 if "canny" in name else 64
    return tiny_spec(guidance="schnell" not in name, in_channels=channels)


def _flux_checkpoint(path: Path, name: str) -> None:
    from loom_flux.tiny import checkpoint_state, save, scaled_fp8_state

    state = checkpoint_state(_flux_spec(name), seed=0)
    prefix = "model.diffusion_model."
    if "fp8_scaled" in name:
        state = scaled_fp8_state(state, prefix=prefix)[0]
    elif "fp8" in name:  # flux1-dev-fp8 / flux1-schnell-fp8: the DiT's weights stored fp8
        state = {
            key: value.to(torch.float8_e4m3fn)
            if key.startswith(prefix) and value.ndim == 2
            else value
            for key, value in state.items()
        }
    save(state, path)


def _flux_dit(path: Path, name: str) -> None:
    from loom_flux.tiny import dit_state, save, scaled_fp8_state

    state = dit_state(_flux_spec(name).dit, seed=0)
    if "fp8_scaled" in name:
        state = scaled_fp8_state(state)[0]
    save(state, path, torch.float8_e4m3fn if name.endswith("_fp8.safetensors") else None)


def _text_encoder(path: Path, name: str) -> None:
    from loom_flux.tiny import clip_state, save, scaled_fp8_t5_state, t5_state, tiny_spec

    spec = tiny_spec()
    if name.startswith("clip_l"):
        save(clip_state(spec.clip, seed=2), path)
    elif "scaled" in name:
        save(scaled_fp8_t5_state(t5_state(spec.t5, seed=1)), path)
    else:
        save(t5_state(spec.t5, seed=1), path, torch.float16 if "fp16" in name else None)


def _flux_vae(path: Path, name: str) -> None:
    from loom_flux.tiny import save, tiny_spec, vae_state

    save(vae_state(tiny_spec().vae, seed=3), path)


def _clip_vision(path: Path, name: str) -> None:
    import attrs
    from loom_clip_vision import tiny
    from loom_sdxl.tiny import tiny_spec

    if "sigclip" in name:
        config = tiny.tiny_siglip_config(layers=SIGLIP_LAYERS)
    else:  # clip_vision_g: its image embeds stand in for SDXL's pooled CLIP-G output
        width = tiny_spec().clip_g.projection_dim
        config = attrs.evolve(tiny.tiny_clip_config(), projection_dim=width)
    tiny.save(tiny.vision_state(config, seed=4), path)


def _redux(path: Path, name: str) -> None:
    from loom_clip_vision import tiny
    from loom_clip_vision.style import ReduxConfig
    from loom_flux.tiny import tiny_spec

    text = tiny_spec().dit.context_dim  # Redux writes tokens as wide as T5's
    siglip = tiny.tiny_siglip_config(layers=SIGLIP_LAYERS)
    config = ReduxConfig(image_dim=siglip.hidden_size, hidden_dim=3 * text, text_dim=text)
    tiny.save(tiny.redux_state(config, seed=5), path)


def _uso_projector(path: Path, name: str) -> None:
    from loom_clip_vision.tiny import tiny_siglip_config
    from loom_flux.tiny import save, tiny_spec, uso_projector_state

    siglip = tiny_siglip_config(layers=SIGLIP_LAYERS)
    tokens = (siglip.image_size // siglip.patch_size) ** 2
    save(uso_projector_state(tokens, siglip.hidden_size, tiny_spec().dit.hidden_size), path)


def _flux_lora(path: Path, name: str) -> None:
    """A rank-4 LoRA in ComfyUI's layout on a few of the tiny DiT's linears."""
    from loom_flux.tiny import dit_state, save, tiny_spec

    base = dit_state(tiny_spec().dit)
    generator = torch.Generator().manual_seed(6)
    lora = {}
    for layer in ("double_blocks.0.img_attn.qkv", "single_blocks.1.linear1", "img_in"):
        rows, cols = base[f"{layer}.weight"].shape
        lora[f"diffusion_model.{layer}.lora_up.weight"] = torch.randn(rows, 4, generator=generator)
        lora[f"diffusion_model.{layer}.lora_down.weight"] = (
            torch.randn(4, cols, generator=generator) * 0.1
        )
        lora[f"diffusion_model.{layer}.alpha"] = torch.tensor(2.0)
    save(lora, path)


Builder = Callable[[Path, str], None]


def _builder(folder: str, name: str) -> Builder:
    if folder == "checkpoints":
        if name.startswith("v1-5"):
            return _sd15
        if name.startswith("sd_xl"):
            return _sdxl
        if name.startswith("flux1"):
            return _flux_checkpoint
    table: dict[str, Builder] = {
        "diffusion_models": _flux_dit,
        "text_encoders": _text_encoder,
        "vae": _flux_vae,
        "clip_vision": _clip_vision,
        "style_models": _redux,
        "model_patches": _uso_projector,
        "loras": _flux_lora,
    }
    if folder in table and (folder != "diffusion_models" or "flux" in name):
        return table[folder]
    raise ValueError(f"no tiny model for {folder}/{name}")


def write_models(models: Path, workflow: dict[str, Any]) -> list[Path]:
    """A tiny model for every file the template lists, under ``models``."""
    written = []
    for folder, name in sorted(model_files(workflow)):
        path = models / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        _builder(folder, name)(path, name)
        written.append(path)
    return written


def load_image_nodes(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [node for node in template_nodes(workflow) if node["type"] == "LoadImage"]


def _uses_mask(node: dict[str, Any]) -> bool:
    return any(out["type"] == "MASK" and out.get("links") for out in node.get("outputs", []))


def write_inputs(input_dir: Path, workflow: dict[str, Any], size: tuple[int, int]) -> None:
    """Each image a LoadImage node names, ``size`` (width, height), random pixels; RGBA with
    a transparent square in the middle (ComfyUI's mask: 1 where alpha is 0) where the
    template uses the node's MASK output."""
    from PIL import Image

    input_dir.mkdir(parents=True, exist_ok=True)
    width, height = size
    for index, node in enumerate(load_image_nodes(workflow)):
        pixels = np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        if _uses_mask(node):
            alpha = np.full((height, width), 255, dtype=np.uint8)
            alpha[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 0
            image.putalpha(Image.fromarray(alpha))
        image.save(input_dir / node["widgets_values"][0])
