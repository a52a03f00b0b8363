"""unCLIP: image embeddings as conditioning, and the unCLIP checkpoint loader.

``unCLIPConditioning`` appends ``{"clip_vision_output", "strength", "noise_augmentation"}``
to each conditioning entry's ``unclip_conditioning`` list, as ComfyUI does; a model with an
ADM input built for image embeddings (SD2.1-unCLIP's ``label_emb``) turns them into its
``y`` vector. No Loom family has such a model: SD2.1-unCLIP checkpoints are refused by
:func:`load_unclip_checkpoint` with the file's name and what is missing; a checkpoint a Loom
family loads comes back with no CLIP vision model, as ComfyUI gives for those families.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from loom.errors import ModelFileError
from loom.types import CheckpointHeader, LoadedParts, LoadRequest, ModelPart

log = logging.getLogger(__name__)

#: Key prefixes only unCLIP checkpoints have: the image embedder and its noise augmentor.
UNCLIP_PREFIXES = ("embedder.model.visual.", "noise_augmentor.")
_WHERE = "unCLIPCheckpointLoader: input 'ckpt_name'"


def add_unclip(
    conditioning: list, clip_vision_output: Any, strength: float, noise_augmentation: float
) -> list:
    """ComfyUI's ``unCLIPConditioning``: strength 0 leaves the conditioning as it is."""
    if strength == 0:
        return conditioning
    entry = {
        "clip_vision_output": clip_vision_output,
        "strength": strength,
        "noise_augmentation": noise_augmentation,
    }
    return [
        [
            tensor,
            {**options, "unclip_conditioning": [*options.get("unclip_conditioning", []), entry]},
        ]
        for tensor, options in conditioning
    ]


def is_unclip_checkpoint(header: CheckpointHeader) -> bool:
    return any(key.startswith(UNCLIP_PREFIXES) for key in header.tensors)


def load_unclip_checkpoint(runtime: Any, path: Path) -> LoadedParts:
    """Load a checkpoint for ``unCLIPCheckpointLoader`` through the registered families.

    :raises ModelFileError: an SD2.1-unCLIP checkpoint (no Loom family has its UNet), or a
        file no family recognises.
    """
    from loom.memory import read_header

    header = read_header(path)
    if is_unclip_checkpoint(header):
        raise ModelFileError(
            f"{_WHERE}: {path.name} is an SD2.1-unCLIP checkpoint (an SD2 UNet with an ADM "
            "input for CLIP image embeddings, and its OpenCLIP image embedder); Loom has no "
            "model family for SD2 or unCLIP UNets, so it cannot be loaded",
            hint="unCLIPConditioning still builds ComfyUI's conditioning, but only an "
            "unCLIP model uses it; for image prompts with Flux use StyleModelApply (Redux)",
        )
    family = _best_family(runtime.registry.families.values(), header)
    if family is None:
        names = ", ".join(runtime.registry.families) or "none"
        raise ModelFileError(
            f"{_WHERE}: no installed plugin recognises {path.name} as a checkpoint; "
            f"installed model families: {names}"
        )
    request = LoadRequest(folders=runtime.folders, memory=runtime.memory)
    parts = family.load(header, ModelPart.CHECKPOINT, request)
    log.warning(
        "%s (%s) holds no CLIP vision model; unCLIPCheckpointLoader's CLIP_VISION is empty",
        path.name,
        family.name,
    )
    return parts


def _best_family(families: Any, header: CheckpointHeader) -> Any:
    best, best_score = None, 0.0
    for family in families:
        score = float(family.detect(header, ModelPart.CHECKPOINT) or 0.0)
        if score > best_score:
            best, best_score = family, score
    return best
