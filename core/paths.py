"""Keeping file names that come from prompts and clients inside the folder they belong to.

One rule everywhere (model folders, input/output files, uploads, user data, embeddings): the
target, with every symlink resolved, must lie inside the folder, with its symlinks resolved.
So a link inside the folder that points out is refused, while a folder that is itself a
symlink works.
"""

from __future__ import annotations

import os
from pathlib import Path

from loom.errors import LoomError


class PathOutsideError(LoomError):
    """A file name resolves outside the folder it must stay in."""


def confine(base: Path | str, *relative: str) -> Path:
    """``base / relative...`` (not resolved), or :class:`PathOutsideError` if it leaves ``base``."""
    if any("\x00" in part for part in relative):
        raise PathOutsideError(f"invalid file name {relative!r}: NUL byte")
    joined = os.path.join(os.path.abspath(base), *[part for part in relative if part])
    real_base = os.path.realpath(base)
    real_target = os.path.realpath(joined)
    if os.path.commonpath((real_base, real_target)) != real_base:
        raise PathOutsideError(
            f"{'/'.join(relative)!r} resolves to {real_target}, outside {real_base}"
        )
    return Path(joined)


def is_inside(base: Path | str, *relative: str) -> bool:
    """Whether :func:`confine` accepts the name."""
    try:
        confine(base, *relative)
    except PathOutsideError:
        return False
    return True


__all__ = ["PathOutsideError", "confine", "is_inside"]
