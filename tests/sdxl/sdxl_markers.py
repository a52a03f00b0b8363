"""Skip markers the sdxl tests share (own module: conftest names collide)."""

from __future__ import annotations

import importlib.util

import pytest

needs_samplers = pytest.mark.skipif(
    importlib.util.find_spec("loom_samplers") is None, reason="loom-samplers is not installed"
)
