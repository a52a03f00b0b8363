"""ComfyUI's GLIGEN nodes: ``GLIGENLoader`` and ``GLIGENTextBoxApply``.

``GLIGENLoader`` reads a file of the ``gligen`` model folder into a :class:`Gligen`;
``GLIGENTextBoxApply`` encodes a phrase with the CLIP, keeps its pooled (unprojected)
embedding and appends ``(phrase, box)`` to each conditioning entry's ``gligen`` option
(a :class:`GligenBoxes`), which the SD1.x model turns into its UNet's gated layers at
sampling time. Box sizes and positions are pixels, divided by 8 as ComfyUI does.
"""

from __future__ import annotations

from typing import Annotated, Any

import loom
from loom.errors import LoomError
from loom.folders import ModelFileChoices
from loom.types import Clip, Conditioning, Socket

MAX_RESOLUTION = 16384
GligenSocket = Annotated[Any, Socket("GLIGEN")]
_NEEDS = "the gligen model folder"


#: The ``gligen_name`` combo: files in the ``gligen`` model folder (live).
gligen_files = ModelFileChoices("gligen")


@loom.node("GLIGENLoader", category="loaders")
class GLIGENLoader:
    gligen_name: str = loom.ui.combo(gligen_files)

    def run(self, ctx: loom.RunContext) -> GligenSocket:
        from loom_sd15.gligen import load_gligen

        path = ctx.require_runtime(_NEEDS).folders.require("gligen", self.gligen_name)
        if path.suffix.lower() != ".safetensors":
            raise LoomError(
                f"GLIGENLoader: input 'gligen_name' is {self.gligen_name}; "
                "only .safetensors GLIGEN files are loaded",
                hint="convert the file to safetensors",
            )
        try:
            return load_gligen(path)
        except LoomError as error:
            raise LoomError(
                f"GLIGENLoader: input 'gligen_name': {error.message}",
                hint=error.hint,
            ) from error


def _upstream_file(ctx: loom.RunContext, input_name: str) -> str:
    """`` (from node N loading FILE)`` for the node feeding ``input_name``, when it says."""
    link = ((ctx.prompt.get(ctx.node_id) or {}).get("inputs") or {}).get(input_name)
    if not (isinstance(link, list) and len(link) == 2):
        return ""
    source = ctx.prompt.get(str(link[0])) or {}
    for value in (source.get("inputs") or {}).values():
        if isinstance(value, str) and value.lower().endswith((".safetensors", ".sft", ".ckpt")):
            return f" (from node {link[0]} {source.get('class_type')} loading {value})"
    return f" (from node {link[0]} {source.get('class_type')})"


@loom.node("GLIGENTextBoxApply", category="conditioning/gligen")
class GLIGENTextBoxApply:
    conditioning_to: Conditioning
    clip: Clip
    gligen_textbox_model: GligenSocket
    text: str = loom.ui.string(None, multiline=True, dynamic_prompts=True)
    width: int = loom.ui.int(64, min=8, max=MAX_RESOLUTION, step=8)
    height: int = loom.ui.int(64, min=8, max=MAX_RESOLUTION, step=8)
    x: int = loom.ui.int(0, min=0, max=MAX_RESOLUTION, step=8)
    y: int = loom.ui.int(0, min=0, max=MAX_RESOLUTION, step=8)

    def run(self, ctx: loom.RunContext) -> Conditioning:
        from loom_sd15.clip import SD15Clip
        from loom_sd15.gligen import MAX_OBJECTS, Gligen, GligenBox, GligenBoxes

        gligen = self.gligen_textbox_model
        if not isinstance(gligen, Gligen):
            raise LoomError(
                "GLIGENTextBoxApply: input 'gligen_textbox_model' is not a GLIGEN model "
                f"({type(gligen).__name__}){_upstream_file(ctx, 'gligen_textbox_model')}",
                hint="connect a GLIGENLoader",
            )
        if self.clip is None or not isinstance(self.clip, SD15Clip):
            raise LoomError(
                f"GLIGENTextBoxApply: the GLIGEN file {gligen.file} (input "
                "'gligen_textbox_model') is for SD1.x, but input 'clip' is "
                f"{type(self.clip).__name__}{_upstream_file(ctx, 'clip')}",
                hint="GLIGEN text boxes work with SD1.x checkpoints and their CLIP only",
            )
        _, pooled = self.clip.encode_from_tokens(self.clip.tokenize(self.text))
        if pooled.shape[-1] != gligen.text_dim:
            raise LoomError(
                f"GLIGENTextBoxApply: the GLIGEN file {gligen.file} (input "
                f"'gligen_textbox_model') takes {gligen.text_dim}-wide phrase embeddings, but "
                f"input 'clip'{_upstream_file(ctx, 'clip')} gives {pooled.shape[-1]}-wide ones",
                hint="use the CLIP of the SD1.x checkpoint the GLIGEN file was made for",
            )
        box = GligenBox(pooled, self.height // 8, self.width // 8, self.y // 8, self.x // 8)
        out = []
        for tensor, options in self.conditioning_to:
            options = dict(options)
            previous = options.get("gligen")
            boxes = previous.boxes if isinstance(previous, GligenBoxes) else ()
            if len(boxes) >= MAX_OBJECTS:
                raise LoomError(
                    f"GLIGENTextBoxApply: input 'conditioning_to' already has {len(boxes)} "
                    f"GLIGEN boxes; the model takes at most {MAX_OBJECTS}",
                )
            options["gligen"] = GligenBoxes(gligen, (*boxes, box))
            out.append([tensor, options])
        return out


NODES = (GLIGENLoader, GLIGENTextBoxApply)
