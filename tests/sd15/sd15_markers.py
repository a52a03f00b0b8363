"""Skip markers the sd15 tests share (a module of its own: importing from ``conftest`` by
name picks whichever conftest module was imported first). Tokenizer files come from the
``shared_tokenizers`` and ``demo_tokenizers`` fixtures (tests/conftest.py)."""

from __future__ import annotations

import importlib.util

import pytest

needs_samplers = pytest.mark.skipif(
    importlib.util.find_spec("loom_samplers") is None, reason="loom-samplers is not installed"
)
