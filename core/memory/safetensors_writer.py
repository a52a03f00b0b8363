"""Writing safetensors files: atomically, with the permissions the user's umask gives.

The safetensors library creates files readable by their owner only (0600); a model file
Loom writes (the demo checkpoint, test models, saved latents) should be as readable as any
other file the user creates, so the mode is set from the umask, as ``open()`` would.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_safetensors(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``tensors`` to ``path`` (through a ``.partial`` file, so a reader never sees half
    a file) with mode ``0o666 & ~umask``; returns ``path``."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_file(dict(tensors), str(partial), metadata=dict(metadata or {}))
    os.chmod(partial, 0o666 & ~current_umask())
    partial.replace(path)
    return path
