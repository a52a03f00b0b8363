"""SaveSVGNode: each SVG document written under the output directory, with the prompt and
workflow embedded as ComfyUI embeds them."""

from __future__ import annotations

import io
import json
import re

import pytest
from loom_builtin_harness import execute, make_ctx, object_info_of

DOC = '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="4"/></svg>'


class ComfySVG:
    """The shape of ComfyUI's SVG value: ``data`` is a list of BytesIO documents."""

    def __init__(self, documents: list[str]) -> None:
        self.data = [io.BytesIO(d.encode()) for d in documents]


def test_object_info_is_comfyuis():
    info = object_info_of("SaveSVGNode")
    assert info["input"] == {
        "required": {
            "svg": ["SVG", {}],
            "filename_prefix": [
                "STRING",
                {
                    "default": "svg/ComfyUI",
                    "multiline": False,
                    "tooltip": "The prefix for the file to save. This may include formatting "
                    "information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to "
                    "include values from nodes.",
                },
            ],
        },
        "hidden": {"prompt": ["PROMPT"], "extra_pnginfo": ["EXTRA_PNGINFO"]},
    }
    assert (info["output"], info["output_node"], info["category"], info["description"]) == (
        [],
        True,
        "image/svg",
        "Save SVG files on disk.",
    )


def test_documents_are_saved_with_the_prompt_and_workflow(tmp_path):
    prompt = {"1": {"class_type": "SaveSVGNode", "inputs": {}}}
    ctx = make_ctx(tmp_path, prompt=prompt, extra_data={"extra_pnginfo": {"workflow": {"n": 1}}})
    out = execute("SaveSVGNode", ctx, svg=ComfySVG([DOC, DOC]), filename_prefix="svg/run")
    assert out.ui == {
        "images": [
            {"filename": f"run_0000{i}_.svg", "subfolder": "svg", "type": "output"} for i in (1, 2)
        ]
    }
    text = (tmp_path / "output" / "svg" / "run_00001_.svg").read_text()
    assert text.startswith('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4">\n')
    embedded = re.search(r"<!\[CDATA\[(.*)\]\]>", text, re.S).group(1)
    assert json.loads(embedded) == {"prompt": prompt, "workflow": {"n": 1}}
    assert text.endswith('<rect width="4" height="4"/></svg>')

    bare = make_ctx(tmp_path, disable_metadata=True)
    execute("SaveSVGNode", bare, svg=DOC, filename_prefix="plain")
    assert (tmp_path / "output" / "plain_00001_.svg").read_text() == DOC


def test_a_value_that_is_not_svg_is_named(tmp_path):
    with pytest.raises(TypeError, match="SaveSVGNode: input 'svg' holds a int"):
        execute("SaveSVGNode", make_ctx(tmp_path), svg=[3], filename_prefix="x")
