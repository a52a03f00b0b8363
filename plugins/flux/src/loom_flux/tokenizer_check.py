"""Validation's T5 tokenizer check (the ``node_problems`` hook): a text-encoder loader that
will build a T5 encoder whose tokenizer files are nowhere to be found fails ``loom validate``
and ``/prompt`` before anything runs.

A loader builds a T5 encoder when it is a ``type=flux`` text-encoder loader
(``DualCLIPLoader``) or when a model file it names carries T5 weights (an all-in-one Flux
checkpoint in ``CheckpointLoaderSimple``: ``text_encoders.t5xxl.transformer.*``). Only
safetensors headers are read; no model is loaded and torch is not imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from loom_sd15.tokenizer import search_dirs
from loom_sd15.tokenizer_check import makes_text_encoder, model_files

from loom.errors import LoomError, ModelFileError
from loom.memory import read_header  # torch-free: loom.safetensors_header
from loom_flux.t5_keys import t5_prefix
from loom_flux.t5_tokenizer import find_tokenizer_dir

if TYPE_CHECKING:
    from loom import NodeEnvironment

FLUX_TYPE = "flux"


def t5_tokenizer_problems(
    node_id: str, prompt: Mapping[str, Any], env: NodeEnvironment
) -> list[str]:
    """The missing T5 tokenizer of a text encoder node ``node_id`` builds, if it is missing."""
    node = prompt[node_id]
    if not makes_text_encoder(node_id, prompt, env):
        return []
    inputs = node.get("inputs", {})
    source = _t5_source(inputs, env)
    if source is None:
        return []
    try:
        find_tokenizer_dir(search_dirs(env.folders))
    except ModelFileError as exc:
        return [f"{node['class_type']}: input {source}: {exc.message}; {exc.hint}"]
    return []


def _t5_source(inputs: Mapping[str, Any], env: NodeEnvironment) -> str | None:
    """The input (and its file) that makes a T5 encoder, as a message names it; else None."""
    for name, value in inputs.items():
        for path in model_files({name: value}, env):
            try:
                if t5_prefix(read_header(path).tensors) is not None:
                    return f"'{name}' ({path.name}, which holds a T5 text encoder)"
            except LoomError:
                continue  # a bad file is the loader's error to report, at run time
    if inputs.get("type") == FLUX_TYPE:
        return f"'type' ({FLUX_TYPE})"
    return None
