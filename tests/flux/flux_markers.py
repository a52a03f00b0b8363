"""Paths and skip markers the flux tests share (own module: see tests/sd15/sd15_markers.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

TOKENIZERS = Path(__file__).resolve().parents[3] / "shared" / "data" / "tokenizers"
if not (TOKENIZERS / "clip_l" / "vocab.json").is_file():
    TOKENIZERS = Path("/work/shared/data/tokenizers")

needs_clip_tokenizer = pytest.mark.skipif(
    not (TOKENIZERS / "clip_l" / "vocab.json").is_file(), reason="CLIP-L tokenizer files missing"
)
needs_samplers = pytest.mark.skipif(
    importlib.util.find_spec("loom_samplers") is None, reason="loom-samplers is not installed"
)
