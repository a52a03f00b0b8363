"""Prompt text to CLIP token chunks with weights, exactly as ComfyUI's ``SDTokenizer``.

* Emphasis: ``(text)`` multiplies the weight by 1.1 (nested: 1.21 ...), ``(text:1.3)`` sets it;
  ``\\(`` and ``\\)`` are literal brackets. Square brackets have no meaning in ComfyUI (they are
  A1111 syntax) and stay literal text, so ``[word]`` is tokenized as written.
* ``embedding:NAME`` inserts a textual-inversion embedding from the embeddings folders
  (``NAME``, ``NAME.safetensors``, ``.pt``, ``.bin``); text after the name continues the prompt.
* Each weighted segment is tokenized as one group; groups move whole to the next 77-token
  chunk unless they are 8 tokens or longer, which are split at the chunk boundary. Each chunk
  is ``start + 75 tokens + end``, padded with the end token.

A token is an ``int`` id or a ``torch.Tensor`` (an embedding vector). Weights are applied to
the encoder output later (see :mod:`loom_sd15.clip`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from loom.paths import model_relative_path

log = logging.getLogger(__name__)

EMBEDDING_PREFIX = "embedding:"
MAX_WORD_LENGTH = 8
EMBEDDING_EXTENSIONS = (".safetensors", ".pt", ".bin")

Token = Any  # int | torch.Tensor
WeightedChunk = list[tuple[Token, float]]
#: A chunk with ComfyUI's word ids: ``(token, weight, word id)``.
WordChunk = list[tuple[Token, float, int]]


def _split_parentheses(text: str) -> list[str]:
    """Top-level pieces: plain runs and balanced ``(...)`` groups (unbalanced stay open)."""
    pieces: list[str] = []
    current = ""
    depth = 0
    for char in text:
        if char == "(":
            if depth == 0:
                if current:
                    pieces.append(current)
                current = "("
            else:
                current += char
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                pieces.append(current + ")")
                current = ""
            else:
                current += char
        else:
            current += char
    if current:
        pieces.append(current)
    return pieces


def parse_weights(text: str, weight: float = 1.0) -> list[tuple[str, float]]:
    """``(text, weight)`` segments of an (escaped) prompt, ComfyUI's ``token_weights``."""
    out: list[tuple[str, float]] = []
    for piece in _split_parentheses(text):
        if len(piece) >= 2 and piece[0] == "(" and piece[-1] == ")":
            inner = piece[1:-1]
            inner_weight = weight * 1.1
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    inner_weight = float(inner[colon + 1 :])
                    inner = inner[:colon]
                except ValueError:
                    pass
            out += parse_weights(inner, inner_weight)
        else:
            out.append((piece, weight))
    return out


def escape_important(text: str) -> str:
    return text.replace("\\)", "\0\1").replace("\\(", "\0\2")


def unescape_important(text: str) -> str:
    return text.replace("\0\1", ")").replace("\0\2", "(")


def parse_prompt(text: str) -> list[tuple[str, float]]:
    """Weighted segments of a prompt, escapes resolved."""
    return [(unescape_important(s), w) for s, w in parse_weights(escape_important(text))]


# --- textual inversion ------------------------------------------------------------------


def _walk_dirs(dirs: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for root in dirs:
        if not root.is_dir():
            continue
        found.append(root)
        for path, _subdirs, _files in os.walk(root, followlinks=True):
            if Path(path) != root:
                found.append(Path(path))
    return found


def find_embedding(name: str, dirs: Sequence[Path]) -> Path | None:
    """The file ``name`` names in one of ``dirs`` (or their sub-folders).

    The name may not leave the folder (``..``, absolute); links the user placed in an
    embeddings folder are followed, as for every model folder.
    """
    if model_relative_path(name) is None:
        return None
    for directory in _walk_dirs(dirs):
        for candidate_name in (name, *(name + ext for ext in EMBEDDING_EXTENSIONS)):
            if (directory / candidate_name).is_file():
                return (directory / candidate_name).resolve()
    return None


def load_embedding(path: Path, size: int, key: str = "clip_l") -> Any:
    """An embedding file's vectors ``[n, size]`` (safetensors only: Loom never unpickles)."""
    import safetensors.torch
    import torch

    if path.suffix.lower() != ".safetensors":
        log.warning(
            "embedding %s is not a safetensors file; Loom does not unpickle, ignoring", path.name
        )
        return None
    tensors = safetensors.torch.load_file(str(path), device="cpu")
    if key in tensors:
        vectors = tensors[key]
    else:
        bundled = [
            t
            for k, t in sorted(tensors.items())
            if k.startswith("bundle_emb.") and (k.endswith(f".{key}") or ".string_to_param." in k)
        ]
        if bundled:
            vectors = torch.cat(bundled, dim=0)
        elif "emb_params" in tensors:
            vectors = tensors["emb_params"]
        else:
            vectors = next(iter(tensors.values()))
    vectors = vectors.reshape(-1, vectors.shape[-1]) if vectors.ndim > 1 else vectors[None]
    if vectors.shape[-1] != size:
        log.warning(
            "embedding %s has width %d, this text encoder needs %d; ignoring",
            path.name,
            vectors.shape[-1],
            size,
        )
        return None
    return vectors.float()


# --- tokenizing -----------------------------------------------------------------------


@attrs.define
class PromptTokenizer:
    """ComfyUI's ``SDTokenizer`` for one CLIP: text -> chunks of ``(token, weight)``."""

    encode_text: Callable[[str], list[int]]  # word -> ids without start/end tokens
    start_token: int
    end_token: int
    pad_token: int
    embedding_dirs: Sequence[Path] = ()
    embedding_size: int = 768
    embedding_key: str = "clip_l"
    max_length: int = 77

    def _embedding(self, text: str) -> tuple[Any, str, str]:
        """``(vectors or None, the name looked up, leftover text)`` for the text after
        ``embedding:``: the name is its first word (a trailing comma is tried without)."""
        words = text.split()
        if not words:
            return None, "", ""
        name, leftover = words[0], " ".join(words[1:])
        vectors = self._load(name)
        if vectors is None:
            stripped = name.strip(",")
            if len(stripped) < len(name):
                vectors = self._load(stripped)
                return vectors, stripped, f"{name[len(stripped) :]} {leftover}"
        return vectors, name, leftover

    def _load(self, name: str) -> Any:
        path = find_embedding(name, self.embedding_dirs)
        return (
            None if path is None else load_embedding(path, self.embedding_size, self.embedding_key)
        )

    def groups(self, text: str) -> list[list[tuple[Token, float]]]:
        """Token groups: one per weighted segment or embedding."""
        groups: list[list[tuple[Token, float]]] = []
        for segment, weight in parse_prompt(text):
            parts = re.split(f" {EMBEDDING_PREFIX}|\n{EMBEDDING_PREFIX}", segment)
            words = [parts[0]] + [EMBEDDING_PREFIX + p for p in parts[1:]]
            for word in (w for w in words if w):
                if word.startswith(EMBEDDING_PREFIX) and self.embedding_dirs:
                    name = word[len(EMBEDDING_PREFIX) :].strip("\n")
                    vectors, looked_up, leftover = self._embedding(name)
                    if vectors is None:
                        log.warning("embedding:%s does not exist, ignoring", looked_up)
                    else:
                        groups.append([(vectors[i], weight) for i in range(vectors.shape[0])])
                    if not leftover:
                        continue
                    word = leftover
                groups.append([(t, weight) for t in self.encode_text(word)])
        return groups

    def tokenize(self, text: str) -> list[WeightedChunk]:
        """Chunks of exactly ``max_length`` ``(token, weight)`` pairs."""
        return [[(t, w) for t, w, _ in chunk] for chunk in self.tokenize_with_word_ids(text)]

    def tokenize_with_word_ids(self, text: str) -> list[WordChunk]:
        """:meth:`tokenize` with ComfyUI's word ids (``return_word_ids``): each token's
        group number (a weighted segment or an embedding, counted from 1, empty groups
        included), 0 for the start, end and pad tokens."""
        chunks: list[WordChunk] = []
        chunk: WordChunk = [(self.start_token, 1.0, 0)]
        chunks.append(chunk)
        limit = self.max_length - 1  # room for the end token
        for index, group in enumerate(self.groups(text)):
            word = index + 1
            is_large = len(group) >= MAX_WORD_LENGTH
            while group:
                if len(group) + len(chunk) > limit:
                    remaining = self.max_length - len(chunk) - 1
                    if is_large:
                        chunk.extend((t, w, word) for t, w in group[:remaining])
                        chunk.append((self.end_token, 1.0, 0))
                        group = group[remaining:]
                    else:
                        chunk.append((self.end_token, 1.0, 0))
                        chunk.extend([(self.pad_token, 1.0, 0)] * remaining)
                    chunk = [(self.start_token, 1.0, 0)]
                    chunks.append(chunk)
                else:
                    chunk.extend((t, w, word) for t, w in group)
                    group = []
        chunk.append((self.end_token, 1.0, 0))
        chunk.extend([(self.pad_token, 1.0, 0)] * (self.max_length - len(chunk)))
        return chunks


def without_word(chunks: Sequence[WordChunk], word_id: int) -> list[WeightedChunk]:
    """Each chunk without the tokens of word ``word_id``, refilled to its length with copies
    of its last token (ComfyUI's PhotoMakerEncode removes its trigger word this way)."""
    out = []
    for chunk in chunks:
        kept = [(t, w) for t, w, word in chunk if word != word_id]
        last = (chunk[-1][0], chunk[-1][1])
        out.append(kept + [last] * (len(chunk) - len(kept)))
    return out
