"""Saving and loading latents as files: SaveLatent and LoadLatent (ComfyUI's ``nodes.py``).

A ``.latent`` file is a safetensors file holding ``latent_tensor`` (the LATENT's ``samples``
as the sampler returned them, before any VAE decode) and an empty ``latent_format_version_0``
tensor; its ``__metadata__`` holds the prompt and each workflow entry as JSON unless metadata
is disabled. SaveLatent writes ``output/<prefix>_<counter:05>_.latent``; LoadLatent lists the
``.latent`` files directly inside ``input/`` and scales files written before the version key
existed (which stored latents times 0.18215) back by ``1 / 0.18215``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import loom
from loom.errors import LoomError
from loom.nodes.builtin.image_io import (
    _SAVE_HIDDEN,
    _file_digest,
    _plain,
    annotated_path,
    run_settings,
    settings_of,
)
from loom.nodes.builtin.save_paths import get_save_path
from loom.settings import Settings
from loom.types import Latent

ui = loom.ui

EXTENSION = ".latent"
LATENT_KEY = "latent_tensor"
VERSION_KEY = "latent_format_version_0"
#: Files without the version key stored SD1.5 latents pre-multiplied by this factor.
LEGACY_SCALE = 0.18215


class LatentFileError(LoomError):
    """A ``.latent`` file that is not a safetensors file holding ``latent_tensor``."""


def latent_metadata(ctx: loom.RunContext) -> dict[str, str] | None:
    """``prompt`` (``""`` without one) and each ``extra_pnginfo`` entry as JSON; None when
    metadata is disabled."""
    if run_settings(ctx).disable_metadata:
        return None
    metadata = {"prompt": json.dumps(_plain(ctx.prompt)) if ctx.prompt is not None else ""}
    for key, value in (ctx.extra_pnginfo or {}).items():
        metadata[key] = json.dumps(_plain(value))
    return metadata


def input_latent_files(settings: Settings | None = None) -> list[str]:
    """Sorted ``.latent`` files directly inside the input directory (LoadLatent's combo)."""
    folder = settings_of(settings).input_dir
    try:
        names = [entry.name for entry in os.scandir(folder) if entry.is_file()]
    except FileNotFoundError:
        return []
    return sorted(name for name in names if name.endswith(EXTENSION))


def read_latent_file(path: Path) -> dict[str, Any]:
    """The LATENT stored in ``path`` (float32 samples, legacy files rescaled)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise LatentFileError(
            f"LoadLatent: input 'latent': {path.name} is not a readable safetensors file ({exc})",
            hint="a .latent file is what SaveLatent writes",
        ) from exc
    if LATENT_KEY not in tensors:
        raise LatentFileError(
            f"LoadLatent: input 'latent': {path.name} holds no {LATENT_KEY!r} tensor "
            f"(it has {', '.join(sorted(tensors)) or 'no tensors'})",
            hint="a .latent file is what SaveLatent writes",
        )
    multiplier = 1.0 if VERSION_KEY in tensors else 1.0 / LEGACY_SCALE
    return {"samples": tensors[LATENT_KEY].float() * multiplier}


@loom.node("SaveLatent", category="_for_testing", output_node=True, hidden=_SAVE_HIDDEN)
class SaveLatent:
    samples: Latent
    filename_prefix: str = ui.string("latents/ComfyUI")

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        import torch

        from loom.memory import write_safetensors

        target = get_save_path(self.filename_prefix, run_settings(ctx).output_dir)
        name = target.file_name(target.counter, EXTENSION[1:])
        tensors = {
            LATENT_KEY: self.samples["samples"].contiguous(),
            VERSION_KEY: torch.tensor([]),
        }
        write_safetensors(target.folder / name, tensors, latent_metadata(ctx))
        entry = {"filename": name, "subfolder": target.subfolder, "type": "output"}
        return loom.NodeOutput(ui={"latents": [entry]})


@loom.node("LoadLatent", category="_for_testing")
class LoadLatent:
    latent: str = ui.combo(input_latent_files)

    @classmethod
    def fingerprint(cls, latent: str, settings: Settings | None = None) -> str:
        return _file_digest(latent, settings)

    @classmethod
    def validate_inputs(cls, latent: str, settings: Settings | None = None) -> bool | str:
        try:
            exists = annotated_path(latent, settings_of(settings)).is_file()
        except FileNotFoundError:
            exists = False
        return True if exists else f"Invalid latent file: {latent}"

    def run(self, ctx: loom.RunContext) -> Latent:
        return read_latent_file(annotated_path(self.latent, run_settings(ctx)))


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in (SaveLatent, LoadLatent):
        register(node_class, python_module="nodes")
