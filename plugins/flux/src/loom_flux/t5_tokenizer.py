"""Finding the T5 tokenizer files (torch-free, so validation can check them cheaply).

Order: an explicit folder, ``<dir>/t5xxl`` of each directory of the ``tokenizers`` model
folder, then the files this package ships (Google's T5 v1.1, Apache-2.0).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from loom.errors import ModelFileError

TOKENIZER_NAME = "t5xxl"
TOKENIZER_FILES = ("tokenizer.json",)


def packaged_tokenizer_dir() -> Path:
    """The T5 tokenizer files shipped with this plugin (Google's T5 v1.1, Apache-2.0)."""
    return Path(__file__).parent / "tokenizers" / TOKENIZER_NAME


def find_tokenizer_dir(search_dirs: Sequence[Path] = (), explicit: Path | None = None) -> Path:
    """``explicit``, else ``<dir>/t5xxl`` of the tokenizers model folder, else package data."""
    candidates = [explicit] if explicit is not None else []
    candidates += [Path(d) / TOKENIZER_NAME for d in search_dirs]
    for folder in candidates:
        if all((folder / name).is_file() for name in TOKENIZER_FILES):
            return folder
    packaged = packaged_tokenizer_dir()
    if not (packaged / "tokenizer.json").is_file():
        first = candidates[0] if candidates else Path("models/tokenizers") / TOKENIZER_NAME
        raise ModelFileError(
            "the T5 tokenizer files (tokenizer.json) were not found",
            hint=f"put tokenizer.json of T5 v1.1 (google/t5-v1_1-xxl) in {first}/ "
            "or reinstall loom-flux",
        )
    return packaged
