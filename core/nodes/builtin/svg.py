"""ComfyUI's ``SaveSVGNode`` (``comfy_extras/nodes_images.py``): write SVG documents to the
output directory.

An ``SVG`` value is what ComfyUI's SVG type holds: an object whose ``data`` is a list of
documents (``BytesIO`` or bytes), as node packs producing vector art hand it over; a plain
string, bytes, or a list of them is accepted too. Unless metadata is disabled, the prompt
and the workflow are embedded as JSON in a ``<metadata>`` element after the opening
``<svg>`` tag, as ComfyUI does, so the file can be dropped back onto the canvas.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Annotated, Any

import loom
from loom.nodes.builtin.image_io import _plain, run_settings
from loom.nodes.builtin.save_paths import get_save_path
from loom.types import Socket

ui = loom.ui

SVG = Annotated[Any, Socket("SVG")]
_SVG_TAG = re.compile(r"(<svg[^>]*>)")


def svg_documents(svg: Any) -> list[str]:
    """The SVG documents an ``SVG`` value holds, as text."""
    items = getattr(svg, "data", svg)
    if isinstance(items, (str, bytes)) or hasattr(items, "read"):
        items = [items]
    documents = []
    for item in items:
        if hasattr(item, "read"):
            item.seek(0)
            item = item.read()
        if isinstance(item, bytes):
            item = item.decode("utf-8")
        if not isinstance(item, str):
            raise TypeError(
                f"SaveSVGNode: input 'svg' holds a {type(item).__name__}, not an SVG document"
            )
        documents.append(item)
    return documents


def with_metadata(document: str, metadata: dict[str, Any]) -> str:
    """``document`` with ``metadata`` as JSON in a CDATA ``<metadata>`` after each ``<svg>``."""
    element = f"  <metadata>\n<![CDATA[\n{json.dumps(metadata, indent=2)}\n]]>\n</metadata>\n"
    return _SVG_TAG.sub(lambda match: match.group(1) + "\n" + element, document)


@loom.node("SaveSVGNode", category="image/svg", output_node=True, v3=True)
class SaveSVGNode:
    """Save SVG files on disk."""

    svg: SVG
    filename_prefix: str = ui.string(
        "svg/ComfyUI",
        tooltip="The prefix for the file to save. This may include formatting information such as "
        "%date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes.",
    )

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        settings = run_settings(ctx)
        target = get_save_path(self.filename_prefix, settings.directory("output"))
        metadata: dict[str, Any] = {}
        if not settings.disable_metadata:
            if ctx.prompt is not None:
                metadata["prompt"] = _plain(ctx.prompt)
            metadata.update(_plain(ctx.extra_pnginfo or {}))
        results = []
        for batch_number, document in enumerate(svg_documents(self.svg)):
            name = target.file_name(target.counter + batch_number, "svg", batch_number)
            text = with_metadata(document, metadata) if metadata else document
            (target.folder / name).write_text(text, encoding="utf-8")
            results.append({"filename": name, "subfolder": target.subfolder, "type": "output"})
        return loom.NodeOutput(ui={"images": results})


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    register(SaveSVGNode, python_module="comfy_extras.nodes_images")
