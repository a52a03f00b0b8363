"""ComfyUI's deprecated ``DiffusersLoader``: a diffusers pipeline folder as MODEL, CLIP and VAE.

The combo lists every folder under ``models/diffusers`` holding a ``model_index.json``. Each
component is one safetensors file the generic loader steps (:func:`load_part`) hand to the
model family that recognises it, exactly as ``UNETLoader``, ``DualCLIPLoader`` and
``VAELoader`` would: the diffusion model from ``unet/`` or ``transformer/``, the text encoders
from ``text_encoder/`` (+ ``text_encoder_2/``, combined into one CLIP), the VAE from ``vae/``.
Converting diffusers' layouts is the families' job; core names none. Only safetensors load:
a folder with only ``.bin`` weights, or weights split into shards, is refused by name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import attrs

import loom
from loom.errors import ModelFileError
from loom.folders import ModelFolders
from loom.nodes.builtin.loaders import COMFY_MODULE, load_part
from loom.types import Clip, LoadRequest, Model, ModelPart, Vae

log = logging.getLogger(__name__)

FOLDER_KEY = "diffusers"
PIPELINE_INDEX = "model_index.json"
#: file names diffusers saves, in the order ComfyUI tries them (its ``.bin`` ones never load)
MODEL_FILES = ("diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors")
ENCODER_FILES = ("model.fp16.safetensors", "model.safetensors")
DIFFUSION_DIRS = ("unet", "transformer")

_WHERE = "DiffusersLoader: input 'model_path'"


@attrs.frozen
class DiffusersFolderChoices:
    """A live combo source: folders under ``models/diffusers`` (any depth) that hold a
    ``model_index.json``, relative and ``/``-separated."""

    def __call__(self, folders: ModelFolders | None) -> list[str]:
        found: set[str] = set()
        for root in self.searched(folders):
            if not root.is_dir():
                continue
            for dirpath, dirnames, files in os.walk(root, followlinks=True):
                dirnames.sort()
                if PIPELINE_INDEX in files:
                    found.add(Path(dirpath).relative_to(root).as_posix())
        return sorted(found)

    def searched(self, folders: ModelFolders | None) -> list[Path]:
        """The directories of ``models/diffusers``, in search order."""
        if folders is None:
            return []
        try:
            return folders.paths(FOLDER_KEY)
        except KeyError:
            return []


def _component(folder: Path, subdirs: tuple[str, ...], names: tuple[str, ...]) -> str | None:
    """``subdir/name`` of the first weights file found, or None; shards and ``.bin``-only
    components are refused (``_WHERE`` names the node and input)."""
    for subdir in subdirs:
        directory = folder / subdir
        if not directory.is_dir():
            continue
        for name in names:
            if (directory / name).is_file():
                return f"{subdir}/{name}"
        sharded = sorted(p.name for p in directory.glob("*.safetensors.index.json"))
        if sharded:
            raise ModelFileError(
                f"{_WHERE} ({folder.name}/{subdir}) holds weights split into shards "
                f"({sharded[0]}), which DiffusersLoader does not join",
                hint="save the component as one safetensors file",
            )
        pickled = sorted(p.name for p in directory.glob("*.bin"))
        if pickled:
            raise ModelFileError(
                f"{_WHERE} ({folder.name}/{subdir}) holds only {pickled[0]}; Loom loads "
                "safetensors files only, never pickled weights",
                hint="convert the folder's weights to safetensors",
            )
    return None


@loom.outputs
class DiffusersParts:
    """The pipeline's parts; a missing text encoder or VAE is None (ComfyUI's behaviour)."""

    model: Model = loom.output(name="MODEL")
    clip: Clip = loom.output(name="CLIP")
    vae: Vae = loom.output(name="VAE")


@loom.node("DiffusersLoader", category="advanced/loaders/deprecated")
class DiffusersLoader:
    model_path: str = loom.ui.combo(DiffusersFolderChoices())

    def run(self, ctx: loom.RunContext) -> DiffusersParts:
        runtime = ctx.require_runtime("model folders and model families")
        folder = runtime.folders.require(FOLDER_KEY, self.model_path)
        if not (folder / PIPELINE_INDEX).is_file():
            raise ModelFileError(
                f"{_WHERE} ({self.model_path}) is not a diffusers folder: it has no "
                f"{PIPELINE_INDEX}"
            )
        diffusion = _component(folder, DIFFUSION_DIRS, MODEL_FILES)
        if diffusion is None:
            raise ModelFileError(
                f"{_WHERE} ({self.model_path}) holds no diffusion model: no unet/ or "
                f"transformer/ folder with {' or '.join(MODEL_FILES)}"
            )
        prefix = self.model_path.rstrip("/") + "/"
        _, parts = load_part(ctx, FOLDER_KEY, prefix + diffusion, ModelPart.DIFFUSION_MODEL)
        if parts.model is None:
            raise ModelFileError(
                f"{_WHERE} ({self.model_path}/{diffusion}) holds no diffusion model"
            )
        encoders = [
            name
            for subdir in ("text_encoder", "text_encoder_2")
            if (name := _component(folder, (subdir,), ENCODER_FILES)) is not None
        ]
        clip = None
        if encoders:
            _, loaded = load_part(
                ctx,
                FOLDER_KEY,
                prefix + encoders[0],
                ModelPart.TEXT_ENCODER,
                LoadRequest(),
                extra_files=tuple(prefix + name for name in encoders[1:]),
            )
            clip = loaded.clip
        vae = None
        vae_file = _component(folder, ("vae",), MODEL_FILES)
        if vae_file is not None:
            vae = load_part(ctx, FOLDER_KEY, prefix + vae_file, ModelPart.VAE)[1].vae
        for name, value in (("text encoder", clip), ("VAE", vae)):
            if value is None:
                log.warning("%s holds no %s; that output is empty", self.model_path, name)
        return DiffusersParts(model=parts.model, clip=clip, vae=vae)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    register(DiffusersLoader, python_module=COMFY_MODULE)
