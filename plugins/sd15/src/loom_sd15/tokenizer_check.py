"""Validation's tokenizer check (the ``node_problems`` hook): a prompt whose text encoder
would not find its tokenizer files fails ``loom validate`` and ``/prompt``, naming the files
and the folder to put them in, before anything runs.

A node *makes* a text encoder when it has a ``CLIP`` output that another node uses and no
``CLIP`` input (``CheckpointLoaderSimple``, ``CLIPLoader``, ``DualCLIPLoader``; not
``LoraLoader``, which passes one through). The tokenizer it needs is the one its model files
name in their metadata (``loom.tokenizer``), else CLIP-L's: what the family's loader uses.
Only safetensors headers are read; no model is loaded and torch is not imported.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loom.errors import LoomError
from loom_sd15.tokenizer import (
    DEFAULT_TOKENIZER,
    TOKENIZER_METADATA,
    TokenizerNotFound,
    TokenizerSource,
    search_dirs,
)

if TYPE_CHECKING:
    from loom import NodeEnvironment

CLIP_TYPE = "CLIP"
#: Model folders whose files a text-encoder loader names.
TEXT_ENCODER_FOLDERS = ("checkpoints", "text_encoders")


def makes_text_encoder(node_id: str, prompt: Mapping[str, Any], env: NodeEnvironment) -> bool:
    """Whether node ``node_id`` builds a CLIP that some node of ``prompt`` uses."""
    registry = env.registry
    definition = registry.get_node(prompt[node_id]["class_type"]) if registry else None
    if definition is None:
        return False
    slots = {i for i, output in enumerate(definition.outputs) if output.type == CLIP_TYPE}
    if not slots:
        return False
    spec = definition.input_types(env)
    declared = {**(spec.get("required") or {}), **(spec.get("optional") or {})}
    if any(_type_of(config) == CLIP_TYPE for config in declared.values()):
        return False
    return any(
        isinstance(value, list)
        and len(value) == 2
        and str(value[0]) == node_id
        and value[1] in slots
        for node in prompt.values()
        for value in node.get("inputs", {}).values()
    )


def tokenizer_names(inputs: Mapping[str, Any], env: NodeEnvironment) -> set[str]:
    """The tokenizers the model files named by ``inputs`` ask for (CLIP-L's by default)."""
    names = set()
    for path in model_files(inputs, env):
        try:
            from loom.memory import read_header

            names.add(read_header(path).metadata.get(TOKENIZER_METADATA, DEFAULT_TOKENIZER))
        except LoomError:
            continue  # a bad file is the loader's error to report, at run time
    return names or {DEFAULT_TOKENIZER}


def tokenizer_problems(node_id: str, prompt: Mapping[str, Any], env: NodeEnvironment) -> list[str]:
    """One message per tokenizer node ``node_id``'s text encoder needs and will not find."""
    if not makes_text_encoder(node_id, prompt, env):
        return []
    node = prompt[node_id]
    dirs = search_dirs(env.folders)
    problems = []
    for name in sorted(tokenizer_names(node.get("inputs", {}), env)):
        try:
            TokenizerSource(name, None, dirs).resolve()
        except TokenizerNotFound as exc:
            problems.append(f"{node['class_type']}: {exc.message}; {exc.hint}")
    return problems


def _type_of(config: Any) -> Any:
    return config[0] if isinstance(config, (list, tuple)) and config else config


def model_files(inputs: Mapping[str, Any], env: NodeEnvironment) -> Iterator[Path]:
    """The text-encoder model files (checkpoints, text encoders) a loader's ``inputs`` name."""
    folders = env.folders
    if folders is None:
        return
    for value in inputs.values():
        if not isinstance(value, str) or not value.endswith(".safetensors"):
            continue
        for key in TEXT_ENCODER_FOLDERS:
            try:
                found = folders.find(key, value)
            except (KeyError, LoomError):
                continue
            if found is not None:
                yield found
                break
