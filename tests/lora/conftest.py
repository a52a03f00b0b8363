"""Fixtures for the loom-lora tests: a toy model with linear and conv layers, a CPU memory
manager, and a runtime holding core's built-ins plus this plugin (no entry-point scan)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn


class Toy(nn.Module):
    """One Linear (6x8, with bias) and one 3x3 Conv2d (6<-4, with bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 6)
        self.conv = nn.Conv2d(4, 6, 3, padding=1)


@pytest.fixture
def toy() -> Toy:
    torch.manual_seed(0)
    return Toy().eval().requires_grad_(False)


@pytest.fixture
def memory():
    from loom.memory import MemoryManager, cpu_device

    return MemoryManager(cpu_device())


@pytest.fixture
def lora_runtime(tmp_path: Path, loom_runtime):
    """A runtime with core's built-ins and this plugin; ``models/loras`` exists."""
    (tmp_path / "models" / "loras").mkdir(parents=True)
    return loom_runtime("lora", settings={"cpu_only": True})
