"""ComfyUI's ``PhotoMakerLoader`` and ``PhotoMakerEncode`` (comfy_extras.nodes_photomaker).

``PhotoMakerEncode`` encodes the prompt with the CLIP input, the tokens of ComfyUI's
trigger word id removed from each chunk (:func:`trigger_word_id`), and fuses the ID image into
the prompt token ComfyUI picks (:func:`trigger_position`); without the trigger the
conditioning is the prompt's. Like ComfyUI (which calls ``encode_from_tokens``, not the
scheduled encode) it uses a hooked CLIP's weights without attaching the hooks. PhotoMaker v1
is made for SDXL: its fuse module is as wide as SDXL's text embeddings (2048).
"""

from __future__ import annotations

from typing import Annotated, Any

import attrs

import loom
from loom.errors import LoomError, ModelFileError
from loom.folders import ModelFileChoices
from loom.types import Clip, Conditioning, Image, Socket

PYTHON_MODULE = "comfy_extras.nodes_photomaker"
CATEGORY = "_for_testing/photomaker"
FOLDER = "photomaker"

PhotoMakerSocket = Annotated[Any, Socket("PHOTOMAKER")]


@attrs.frozen
class PhotoMaker:
    """The PHOTOMAKER socket value: the ID encoder's handle and its file."""

    handle: Any
    file: str


@loom.node("PhotoMakerLoader", category=CATEGORY, experimental=True, v3=True)
class PhotoMakerLoader:
    # No docstring: ComfyUI's node has no description.

    photomaker_model_name: str = loom.ui.combo(ModelFileChoices(FOLDER))

    def run(self, ctx: loom.RunContext) -> PhotoMakerSocket:
        from loom.memory import open_safetensors
        from loom_clip_vision.photomaker import load_photomaker

        runtime = ctx.require_runtime("the photomaker model folder")
        path = runtime.folders.require(FOLDER, self.photomaker_model_name)
        try:
            handle = load_photomaker(open_safetensors(path), path.name)
        except ModelFileError as error:
            raise ModelFileError(
                f"PhotoMakerLoader: input 'photomaker_model_name': {error.message}",
                hint=error.hint,
            ) from None
        return PhotoMaker(handle, path.name)


@loom.node("PhotoMakerEncode", category=CATEGORY, experimental=True, v3=True)
class PhotoMakerEncode:
    # No docstring: ComfyUI's node has no description.

    photomaker: PhotoMakerSocket
    image: Image
    clip: Clip
    text: str = loom.ui.string("photograph of photomaker", multiline=True, dynamic_prompts=True)

    def run(self, ctx: loom.RunContext) -> Conditioning:
        from loom_clip_vision.photomaker import fuse_prompt, trigger_position, trigger_word_id

        if self.clip is None:
            raise LoomError("PhotoMakerEncode: input 'clip' is empty (no text encoder)")
        tokenize = getattr(self.clip, "tokenize_without_word", None)
        if tokenize is None:
            raise LoomError(
                "PhotoMakerEncode: input 'clip' cannot give its prompt tokens with word ids "
                f"({type(self.clip).__name__})",
                hint="PhotoMaker v1 is made for SDXL: use an SDXL checkpoint's CLIP",
            )
        cond, pooled_output = self.clip.encode_from_tokens(
            tokenize(self.text, trigger_word_id(self.text))
        )
        pooled = {"pooled_output": pooled_output}
        position = trigger_position(self.text)
        if position is None:
            return [[cond, pooled]]
        handle = self.photomaker.handle
        width = handle.module.config.embed_dim
        if cond.shape[-1] != width:
            raise LoomError(
                f"PhotoMakerEncode: input 'clip' gives {cond.shape[-1]}-wide text embeddings "
                f"but the PhotoMaker file {self.photomaker.file} fuses {width}-wide ones",
                hint="PhotoMaker v1 is made for SDXL: use an SDXL checkpoint's CLIP",
            )
        if position >= cond.shape[1]:
            raise LoomError(
                f"PhotoMakerEncode: input 'text': the trigger word is word {position + 1}, "
                f"past the {cond.shape[1]} prompt tokens"
            )
        memory = ctx.runtime.memory if ctx.runtime is not None else None
        if memory is not None:
            memory.load([handle])
        return [[fuse_prompt(handle, self.image, cond, position), pooled]]


NODES = (PhotoMakerLoader, PhotoMakerEncode)
