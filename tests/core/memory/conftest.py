"""Fixtures for the memory tests."""

from __future__ import annotations

import pytest
import torch
from memory_helpers import TinyNet, make_input, make_net


@pytest.fixture
def net() -> TinyNet:
    return make_net()


@pytest.fixture
def x() -> torch.Tensor:
    return make_input()
