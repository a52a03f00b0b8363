"""Shared by every test folder: tests/ on ``sys.path`` (for :mod:`device_params`), and the
``no_tf32`` fixture. Fixtures of one plugin's tests live in that folder's conftest."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.append(HERE)

from device_params import ieee_fp32  # noqa: E402


@pytest.fixture
def no_tf32() -> Iterator[None]:
    """float32 convolutions and matmuls without TF32 on CUDA for the test (restored after)."""
    with ieee_fp32():
        yield
