"""Validation's T5 tokenizer check (the ``node_problems`` hook): a Flux text-encoder loader
(``type`` flux) whose T5 tokenizer files are nowhere to be found fails ``loom validate`` and
``/prompt`` before anything runs. Reads no model file and imports no torch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from loom_sd15.tokenizer import search_dirs
from loom_sd15.tokenizer_check import makes_text_encoder

from loom.errors import ModelFileError
from loom_flux.t5_tokenizer import find_tokenizer_dir

if TYPE_CHECKING:
    from loom import NodeEnvironment

FLUX_TYPE = "flux"


def t5_tokenizer_problems(
    node_id: str, prompt: Mapping[str, Any], env: NodeEnvironment
) -> list[str]:
    """The missing T5 tokenizer of a ``type=flux`` text-encoder loader, if it is missing."""
    node = prompt[node_id]
    if node.get("inputs", {}).get("type") != FLUX_TYPE:
        return []
    if not makes_text_encoder(node_id, prompt, env):
        return []
    try:
        find_tokenizer_dir(search_dirs(env.folders))
    except ModelFileError as exc:
        return [f"{node['class_type']}: {exc.message}; {exc.hint}"]
    return []
