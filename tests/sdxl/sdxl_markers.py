"""Paths and skip markers the sdxl tests share (own module: conftest names collide)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

TOKENIZERS = Path(__file__).resolve().parents[3] / "shared" / "data" / "tokenizers"
if not (TOKENIZERS / "clip_l" / "vocab.json").is_file():
    TOKENIZERS = Path("/work/shared/data/tokenizers")
CLIP_L = TOKENIZERS / "clip_l"

needs_tokenizer = pytest.mark.skipif(
    not (CLIP_L / "vocab.json").is_file(), reason="CLIP-L tokenizer files not available"
)
needs_samplers = pytest.mark.skipif(
    importlib.util.find_spec("loom_samplers") is None, reason="loom-samplers is not installed"
)
