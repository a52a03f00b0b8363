"""Finding the files of a CLIP BPE tokenizer, without ever downloading them.

Order: a folder named in the load request (``LoadRequest.tokenizer_dir``), ``<dir>/<name>/``
for every directory of the ``tokenizers`` model folder (``models/tokenizers`` under the base directory,
plus ``tokenizers:`` entries of extra_model_paths.yaml) and of ``LOOM_TOKENIZERS_PATH``
(``os.pathsep``-separated), then the files this package ships (``clip_l``: CLIP ViT-L/14's
vocabulary, MIT, see ``tokenizers/clip_l/NOTICE``; as ComfyUI bundles it), then the Hugging
Face cache (read only, offline). With none of them, :class:`TokenizerNotFound` says which
files to put where. So real SD1.x checkpoints need no tokenizer download, and a user's
folder still overrides the shipped files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import attrs

from loom.errors import LoomError

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("vocab.json", "merges.txt")
#: safetensors metadata key naming the tokenizer folder a checkpoint needs (the demo's).
TOKENIZER_METADATA = "loom.tokenizer"
#: The tokenizer a checkpoint without that key needs.
DEFAULT_TOKENIZER = "clip_l"
#: Hugging Face repositories whose cached snapshot holds each tokenizer.
HF_REPOS = {"clip_l": ("openai/clip-vit-large-patch14",)}
ENV_PATH = "LOOM_TOKENIZERS_PATH"


class TokenizerNotFound(LoomError):
    """The tokenizer files are nowhere Loom may look."""


@attrs.frozen
class TokenizerSource:
    """Where to look for tokenizer ``name``: explicit folder, then search dirs, then HF cache."""

    name: str = "clip_l"
    path: Path | None = None
    search_dirs: tuple[Path, ...] = ()

    def resolve(self) -> Path:
        tried: list[str] = []
        candidates = [self.path] if self.path is not None else []
        env_dirs = [Path(p) for p in os.environ.get(ENV_PATH, "").split(os.pathsep) if p]
        candidates += [d / self.name for d in (*self.search_dirs, *env_dirs)]
        for folder in candidates:
            if _complete(folder):
                return folder
            tried.append(str(folder))
        shipped = packaged(self.name)
        if shipped is not None:
            return shipped
        cached = _hf_cache(self.name)
        if cached is not None:
            return cached
        tried.append("the Hugging Face cache (" + ", ".join(HF_REPOS.get(self.name, ("-",))) + ")")
        first = candidates[0] if candidates else Path("models/tokenizers") / self.name
        raise TokenizerNotFound(
            f"the {self.name} tokenizer files ({', '.join(TOKENIZER_FILES)}) were not found; "
            f"looked in: {'; '.join(tried)}",
            hint=f"copy {' and '.join(TOKENIZER_FILES)} of the CLIP ViT-L/14 tokenizer "
            f"(openai/clip-vit-large-patch14) into {first}/ or set {ENV_PATH}",
        )

    def load(self) -> Any:
        return load_tokenizer(self.resolve())


def packaged(name: str) -> Path | None:
    """The folder of tokenizer ``name`` shipped inside this package, if it ships one."""
    folder = Path(str(resources.files("loom_sd15").joinpath("tokenizers", name)))
    return folder if _complete(folder) else None


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in TOKENIZER_FILES)


def _hf_cache(name: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for repo in HF_REPOS.get(name, ()):
        found = [try_to_load_from_cache(repo, f) for f in TOKENIZER_FILES]
        if all(isinstance(f, str) for f in found):
            return Path(found[0]).parent
    return None


@lru_cache(maxsize=8)
def load_tokenizer(folder: Path) -> Any:
    """A ``transformers.CLIPTokenizer`` built from ``folder``'s vocab.json and merges.txt."""
    from transformers import CLIPTokenizer

    log.debug("loading tokenizer from %s", folder)
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def search_dirs(folders: Any) -> tuple[Path, ...]:
    """The ``tokenizers`` model folder's directories, if a runtime's folders are known."""
    if folders is None:
        return ()
    try:
        return tuple(Path(p) for p in folders.paths("tokenizers"))
    except LoomError:
        return ()


def special_tokens(tokenizer: Any) -> tuple[int, int]:
    """``(start, end)`` ids, read from the tokenizer (the tiny demo vocab differs from CLIP-L)."""
    ids = tokenizer("")["input_ids"]
    return int(ids[0]), int(ids[1])


def word_ids(tokenizer: Any, word: str) -> list[int]:
    return [int(i) for i in tokenizer(word)["input_ids"][1:-1]]


__all__: Sequence[str] = ["TokenizerNotFound", "TokenizerSource", "load_tokenizer", "search_dirs"]
