"""Saving models as safetensors files: ``CheckpointSave``, ``ImageOnlyCheckpointSave``,
``ModelSave``, ``CLIPSave`` and ``VAESave``
(ComfyUI's ``comfy_extras/nodes_model_merging.py``; ImageOnlyCheckpointSave is in its
``nodes_video_model.py``).

Each writes ``output/<prefix>_<counter:05>_.safetensors`` (the counter and subfolders as
SaveLatent finds them) with the weights the inputs would compute with: the family's
:class:`loom.types.CheckpointPart` gives them, patches applied, in its checkpoint layout.
CheckpointSave and ModelSave write the checkpoint's keys (``model.diffusion_model.*`` ...);
VAESave writes the VAE alone, without its checkpoint prefix; CLIPSave one file per text
encoder (:class:`loom.types.SavableTextEncoders`), the encoder's name after the prefix. The metadata is ComfyUI's: the
model's ``modelspec`` keys (always), then the prompt and workflow JSON unless metadata is
disabled.

The patches are merged as ComfyUI merges them before saving (it loads the model onto its
device first): on the runtime's compute device in its merge dtype
(:meth:`loom.memory.MemoryManager.merging_for_save`), so on a GPU whose LoRA compute dtype
is fp16 the saved weights are those sampling would use there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import loom
from loom.errors import LoomError
from loom.nodes.builtin.image_io import _SAVE_HIDDEN, run_settings
from loom.nodes.builtin.latent_files import latent_metadata
from loom.nodes.builtin.save_paths import get_save_path
from loom.types import (
    CheckpointModel,
    CheckpointPart,
    Clip,
    ClipVision,
    Model,
    SavableTextEncoders,
    Vae,
)

ui = loom.ui

COMFY_MODULE = "comfy_extras.nodes_model_merging"
CATEGORY = "advanced/model_merging"
EXTENSION = "safetensors"
ARCHITECTURE = "modelspec.architecture"


def _part(node: str, name: str, value: Any, protocol: type = CheckpointPart) -> Any:
    if not isinstance(value, protocol):
        raise LoomError(
            f"{node}: input '{name}' ({type(value).__name__}) cannot give its weights in a "
            "checkpoint layout; saving it is not supported",
            hint="the model family that loaded it does not implement saving",
        )
    return value


def modelspec(metadata: dict[str, str], title: str) -> dict[str, str]:
    """``metadata`` with ComfyUI's modelspec header keys added when it names an architecture
    (spec version, implementation, ``"<file name> <counter>"`` title), in ComfyUI's order."""
    if ARCHITECTURE not in metadata:
        return dict(metadata)
    out = {ARCHITECTURE: metadata[ARCHITECTURE]}
    out["modelspec.sai_model_spec"] = "1.0.0"
    out["modelspec.implementation"] = "sgm"
    out["modelspec.title"] = title
    out.update((key, value) for key, value in metadata.items() if key not in out)
    return out


def save_parts(
    ctx: loom.RunContext,
    filename_prefix: str,
    tensors: dict[str, Any],
    metadata: dict[str, str],
) -> loom.NodeOutput:
    """Write ``tensors`` to the next ``<prefix>_<counter:05>_.safetensors`` in the output
    folder with ``metadata`` and the prompt's (ComfyUI's ``save_checkpoint``)."""
    from loom.memory import write_safetensors

    target = get_save_path(filename_prefix, run_settings(ctx).output_dir)
    name = target.file_name(target.counter, EXTENSION)
    metadata = modelspec(metadata, f"{target.filename} {target.counter}")
    metadata.update(latent_metadata(ctx) or {})
    contiguous = {key: tensor.contiguous() for key, tensor in tensors.items()}
    write_safetensors(target.folder / name, contiguous, metadata)
    return loom.NodeOutput()


@contextmanager
def merging_for_save(ctx: loom.RunContext) -> Iterator[None]:
    """Within it, parts give their weights merged on the runtime's device in its merge dtype
    (unchanged without a runtime: on the CPU, as loaded)."""
    if ctx.runtime is None:
        yield
        return
    with ctx.runtime.memory.merging_for_save():
        yield


def _model_parts(node: str, model: Any) -> tuple[dict[str, Any], dict[str, str]]:
    part = _part(node, "model", model, CheckpointModel)
    return part.checkpoint_state(), dict(part.checkpoint_metadata())


@loom.node(
    "CheckpointSave",
    category=CATEGORY,
    display_name="Save Checkpoint",
    output_node=True,
    hidden=_SAVE_HIDDEN,
    v3=True,
)
class CheckpointSave:
    """The MODEL, CLIP and VAE in one checkpoint file."""

    model: Model
    clip: Clip
    vae: Vae
    filename_prefix: str = ui.string("checkpoints/ComfyUI")

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        with merging_for_save(ctx):
            tensors, metadata = _model_parts("CheckpointSave", self.model)
            tensors.update(_part("CheckpointSave", "clip", self.clip).checkpoint_state())
            tensors.update(_part("CheckpointSave", "vae", self.vae).checkpoint_state())
        return save_parts(ctx, self.filename_prefix, tensors, metadata)


@loom.node(
    "ImageOnlyCheckpointSave", category=CATEGORY, output_node=True, hidden=_SAVE_HIDDEN, v3=True
)
class ImageOnlyCheckpointSave:
    """The MODEL, CLIP vision tower and VAE in one checkpoint file (the tower keyed as its own
    ``clip_vision`` file, as ComfyUI writes it for the families Loom runs)."""

    model: Model
    clip_vision: ClipVision
    vae: Vae
    filename_prefix: str = ui.string("checkpoints/ComfyUI")

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        node = "ImageOnlyCheckpointSave"
        with merging_for_save(ctx):
            tensors, metadata = _model_parts(node, self.model)
            tensors.update(_part(node, "clip_vision", self.clip_vision).checkpoint_state())
            tensors.update(_part(node, "vae", self.vae).checkpoint_state())
        return save_parts(ctx, self.filename_prefix, tensors, metadata)


@loom.node("ModelSave", category=CATEGORY, output_node=True, hidden=_SAVE_HIDDEN, v3=True)
class ModelSave:
    """The MODEL alone, keyed as in a checkpoint."""

    model: Model
    filename_prefix: str = ui.string("diffusion_models/ComfyUI")

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        with merging_for_save(ctx):
            tensors, metadata = _model_parts("ModelSave", self.model)
        return save_parts(ctx, self.filename_prefix, tensors, metadata)


@loom.node("CLIPSave", category=CATEGORY, output_node=True, hidden=_SAVE_HIDDEN, v3=True)
class CLIPSave:
    """Each text encoder of the CLIP in a file of its own, named after it
    (``clip/ComfyUI_clip_l_00001_.safetensors``), keyed as that encoder's own file."""

    clip: Clip
    filename_prefix: str = ui.string("clip/ComfyUI")

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        part = _part("CLIPSave", "clip", self.clip, SavableTextEncoders)
        # ComfyUI's CLIPSave marks its files "pt" unless metadata is disabled
        metadata = {} if latent_metadata(ctx) is None else {"format": "pt"}
        with merging_for_save(ctx):
            files = part.text_encoder_files()
        for name, tensors in files.items():
            prefix = f"{self.filename_prefix}_{name}" if name else self.filename_prefix
            save_parts(ctx, prefix, tensors, metadata)
        return loom.NodeOutput()


@loom.node("VAESave", category=CATEGORY, output_node=True, hidden=_SAVE_HIDDEN, v3=True)
class VAESave:
    """The VAE alone, its keys without the checkpoint prefix."""

    vae: Vae
    filename_prefix: str = ui.string("vae/ComfyUI_vae")

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        part = _part("VAESave", "vae", self.vae)
        start = len(part.checkpoint_prefix)
        with merging_for_save(ctx):
            state = part.checkpoint_state()
        tensors = {key[start:]: value for key, value in state.items()}
        return save_parts(ctx, self.filename_prefix, tensors, {})


@loom.hookimpl
def register_nodes(register) -> None:
    for node_class in (CheckpointSave, ModelSave, CLIPSave, VAESave):
        register(node_class, python_module=COMFY_MODULE)
    # ComfyUI defines it in nodes_video_model.py (a CheckpointSave subclass), not with the others.
    register(ImageOnlyCheckpointSave, python_module="comfy_extras.nodes_video_model")
