"""Keeping file names that come from prompts and clients inside the folder they belong to.

Two rules, one per kind of folder:

* input/output/temp files, uploads and user data (:func:`confine`): the target, with every
  symlink resolved, must lie inside the folder, with its symlinks resolved. A link inside the
  folder that points out is refused, while a folder that is itself a symlink works.
* model folders (:func:`model_relative_path`): the *name* must stay inside the folder
  (relative, no ``..``), but links the user placed there are followed wherever they point,
  as ComfyUI does for model folders shared from another disk. Listing and loading use this
  one rule, so a listed file always loads.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

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


def model_relative_path(name: str) -> PurePath | None:
    """``name`` as a path relative to a model folder, or None if the name itself leaves it.

    Only the name is judged (absolute, a drive, ``..`` or a NUL byte is refused); what a
    symlink inside the folder points to is the user's choice and is followed.
    """
    if not name or "\x00" in name:
        return None
    for flavour in (PurePosixPath, PureWindowsPath):
        path = flavour(name)
        if path.is_absolute() or path.anchor or ".." in path.parts:
            return None
    return PurePath(name)


def is_inside(base: Path | str, *relative: str) -> bool:
    """Whether :func:`confine` accepts the name."""
    try:
        confine(base, *relative)
    except PathOutsideError:
        return False
    return True


__all__ = ["PathOutsideError", "confine", "is_inside"]
