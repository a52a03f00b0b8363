"""Skip markers the flux tests share (own module: see tests/sd15/sd15_markers.py). The CLIP-L
and T5 tokenizers come from loom-sd15's and loom-flux's package data."""

from __future__ import annotations

import importlib.util

import pytest

needs_samplers = pytest.mark.skipif(
    importlib.util.find_spec("loom_samplers") is None, reason="loom-samplers is not installed"
)
