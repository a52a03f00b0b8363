"""Which registered model family owns a safetensors file (by its header).

:func:`detect_family` asks every registered :class:`~loom.types.ModelFamily` for a
detection score and returns the most confident one; :func:`detect_common_family` does the
same for several files that load into one part.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from loom.errors import UnknownCheckpointError, install_command
from loom.types import CheckpointHeader, ModelFamily, ModelPart

if TYPE_CHECKING:
    from loom.registry import Registry

log = logging.getLogger(__name__)


def detect_family(registry: Registry, header: CheckpointHeader, part: ModelPart) -> ModelFamily:
    """The registered family most confident that ``header`` is its ``part``.

    Every family in ``registry.families`` scores the file; the highest score above 0
    wins, ties going to the family registered first.

    :raises UnknownCheckpointError: no family scores the file above 0.
    """
    return detect_common_family(registry, [header], part)


def detect_common_family(
    registry: Registry, headers: Sequence[CheckpointHeader], part: ModelPart
) -> ModelFamily:
    """The family that recognises every file in ``headers`` as ``part``, by total score.

    Used by loaders that combine several files into one part (``DualCLIPLoader``): a
    family must score every file above 0 to be chosen.
    """
    families: Mapping[str, ModelFamily] = registry.families
    best: ModelFamily | None = None
    best_score = 0.0
    for family in families.values():
        scores = [_score(family, header, part) for header in headers]
        if not scores or min(scores) <= 0:
            continue
        total = sum(scores)
        if total > best_score:
            best, best_score = family, total
    if best is None:
        raise _unknown(headers, part, families)
    log.debug(
        "%s recognised as %s by family %s (score %s)",
        ", ".join(h.path.name for h in headers),
        ModelPart(part).label,
        best.name,
        best_score,
    )
    return best


def _score(family: ModelFamily, header: CheckpointHeader, part: ModelPart) -> float:
    try:
        score = family.detect(header, part)
    except Exception as exc:  # one family's bug must not stop the others from claiming the file
        log.warning(
            "model family %s failed to inspect %s: %s: %s",
            family.name,
            header.path.name,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        return 0.0
    return float(score or 0.0)


def _unknown(
    headers: Iterable[CheckpointHeader], part: ModelPart, families: Mapping[str, ModelFamily]
) -> UnknownCheckpointError:
    files = " + ".join(h.path.name for h in headers)
    what = ModelPart(part).label
    installed = ", ".join(families) if families else "none"
    hint = None
    if not families:
        hint = (
            f"install a model family plugin, for example loom-sd15 ({install_command('loom-sd15')})"
        )
    return UnknownCheckpointError(
        f"no installed plugin recognises {files} as a {what}; installed model families: {installed}",
        hint=hint,
    )
