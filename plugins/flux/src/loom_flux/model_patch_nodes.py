"""ComfyUI's ``ModelPatchLoader`` and ``USOStyleReference`` (comfy_extras.nodes_model_patch).

``ModelPatchLoader`` loads a ``models/model_patches`` file; Loom knows Flux USO's style
projector (:mod:`loom_flux.uso`) and refuses the other kinds ComfyUI loads there (Qwen-Image
DiffSynth and Z-Image Fun ControlNets) by name. ``USOStyleReference`` returns a clone of a
Flux MODEL whose text tokens are preceded by the projector's tokens for a SigLIP
CLIP_VISION_OUTPUT.
"""

from __future__ import annotations

from typing import Annotated, Any

import attrs

import loom
from loom.errors import LoomError, ModelFileError
from loom.folders import ModelFileChoices
from loom.types import Model, Socket

PYTHON_MODULE = "comfy_extras.nodes_model_patch"
FOLDER = "model_patches"

ModelPatchSocket = Annotated[Any, Socket("MODEL_PATCH")]
ClipVisionOutputSocket = Annotated[Any, Socket("CLIP_VISION_OUTPUT")]


@attrs.frozen
class ModelPatch:
    """The MODEL_PATCH socket value: a USO projector and the file it came from."""

    projector: Any
    file: str


# nodes_model_patch is INPUT_TYPES-based in ComfyUI (v0.7.0 source): classic /object_info form.
@loom.node("ModelPatchLoader", category="advanced/loaders", experimental=True)
class ModelPatchLoader:
    # No docstring: ComfyUI's node has no description.

    name: str = loom.ui.combo(ModelFileChoices(FOLDER))

    def run(self, ctx: loom.RunContext) -> ModelPatchSocket:
        from loom.memory import open_safetensors
        from loom_flux.uso import load_projector

        path = ctx.require_runtime("the model_patches folder").folders.require(FOLDER, self.name)
        try:
            return ModelPatch(load_projector(open_safetensors(path), path.name), path.name)
        except ModelFileError as error:
            raise ModelFileError(
                f"ModelPatchLoader: input 'name': {error.message}", hint=error.hint
            ) from None


@loom.node("USOStyleReference", category="advanced/model_patches/flux", experimental=True)
class USOStyleReference:
    # No docstring: ComfyUI's node has no description.

    model: Model
    model_patch: ModelPatchSocket
    clip_vision_output: ClipVisionOutputSocket

    def run(self, ctx: loom.RunContext) -> Model:
        from loom_flux.model import FluxModel
        from loom_flux.uso import USOStyleTokens, siglip_layers

        if not isinstance(self.model, FluxModel):
            raise LoomError(
                f"USOStyleReference: input 'model' is {type(self.model).__name__}, not a Flux "
                f"model; the USO projector {self.model_patch.file} patches Flux only"
            )
        hidden = self.model.config.hidden_size
        width = self.model_patch.projector.config.hidden_size
        if width != hidden:
            raise LoomError(
                f"USOStyleReference: input 'model_patch' ({self.model_patch.file}) makes "
                f"{width}-wide tokens but the Flux model's are {hidden} wide"
            )
        states = siglip_layers(self.clip_vision_output)
        config = self.model_patch.projector.config
        have = tuple(states[0].shape[1:])
        if have != (config.siglip_tokens, config.siglip_dim):
            raise LoomError(
                f"USOStyleReference: input 'clip_vision_output' has {have[0]} image tokens "
                f"{have[1]} wide but the projector {self.model_patch.file} takes "
                f"{config.siglip_tokens} tokens {config.siglip_dim} wide",
                hint="encode the style image with the SigLIP model USO was trained with",
            )
        patched = self.model.clone()
        patched.text_prefix = USOStyleTokens(
            self.model_patch.projector, self.model_patch.file, states
        )
        return patched


NODES = (ModelPatchLoader, USOStyleReference)
