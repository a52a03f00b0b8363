"""Where saved files go: ComfyUI's ``filename_prefix`` rules and file counters.

``filename_prefix`` may hold a subfolder (``"portraits/ComfyUI"``) and the tokens
``%width% %height% %year% %month% %day% %hour% %minute% %second%``; ``%batch_num%`` is
left for the caller to fill per image. Files are ``<prefix>_<counter:05>_.<ext>``; the
counter is one more than the largest counter already used in that folder for that
prefix. A prefix that would leave the base directory raises :class:`OutputPathError`.
Also used by the HTTP plugin (``/upload``, ``/view``) and any node that saves files.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import attrs

from loom.errors import LoomError
from loom.paths import PathOutsideError, confine

BATCH_NUM = "%batch_num%"


class OutputPathError(LoomError):
    """A filename prefix or file name points outside the directory it must stay in."""


@attrs.frozen
class SavePath:
    """Where to write: the folder, the file stem, the first free counter and the subfolder."""

    folder: Path
    filename: str
    counter: int
    subfolder: str
    filename_prefix: str

    def file_name(
        self, counter: int, extension: str = "png", batch_number: int | None = None
    ) -> str:
        """``<filename>_<counter:05>_.<extension>``, with ``%batch_num%`` filled in."""
        stem = (
            self.filename
            if batch_number is None
            else self.filename.replace(BATCH_NUM, str(batch_number))
        )
        return f"{stem}_{counter:05}_.{extension}"


def expand_tokens(
    prefix: str, width: int = 0, height: int = 0, now: time.struct_time | None = None
) -> str:
    """Replace the server-side ``%...%`` tokens (not ``%batch_num%``)."""
    if "%" not in prefix:
        return prefix
    now = now or time.localtime()
    values = {
        "%width%": str(width),
        "%height%": str(height),
        "%year%": str(now.tm_year),
        "%month%": f"{now.tm_mon:02}",
        "%day%": f"{now.tm_mday:02}",
        "%hour%": f"{now.tm_hour:02}",
        "%minute%": f"{now.tm_min:02}",
        "%second%": f"{now.tm_sec:02}",
    }
    for token, value in values.items():
        prefix = prefix.replace(token, value)
    return prefix


def confined(base: Path, relative: str) -> Path:
    """``base / relative``, refusing any path that would leave ``base``."""
    try:
        return Path(os.path.abspath(confine(base, relative)))
    except PathOutsideError as exc:
        raise OutputPathError(
            f"saving outside the output folder is not allowed: {exc}",
            hint="use a filename_prefix without '..' or an absolute path",
        ) from exc


def next_counter(folder: Path, filename: str) -> int:
    """One more than the largest counter of ``<filename>_<digits>_...`` files in ``folder``."""
    if BATCH_NUM in filename:
        # Any batch number matches, so runs of a batched prefix do not overwrite each other.
        parts = [re.escape(os.path.normcase(p)) for p in filename.split(BATCH_NUM)]
        stem = r"\d+".join(parts)
    else:
        stem = re.escape(os.path.normcase(filename))
    pattern = re.compile(stem + "_")
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 1
    best = 0
    for name in names:
        match = pattern.match(os.path.normcase(name))
        if match is not None:
            best = max(best, _leading_number(name[match.end() :]))
    return best + 1


def _leading_number(rest: str) -> int:
    try:
        return int(rest.split("_")[0])
    except ValueError:
        return 0


def get_save_path(filename_prefix: str, base: Path, width: int = 0, height: int = 0) -> SavePath:
    """Resolve ``filename_prefix`` under ``base`` (created if missing) and find the next counter."""
    prefix = expand_tokens(filename_prefix, width, height)
    normalized = os.path.normpath(prefix)
    subfolder = os.path.dirname(normalized)
    filename = os.path.basename(normalized)
    folder = confined(base, subfolder)
    counter = next_counter(folder, filename)
    folder.mkdir(parents=True, exist_ok=True)
    return SavePath(folder, filename, counter, subfolder, prefix)
