"""Fixtures for the loom-upscale tests: the reference RRDBNet, its weights as a model file,
and a runtime holding core's built-ins plus this plugin (see upscale_reference.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from upscale_reference import RRDBNet, tiny_rrdbnet, write_model


@pytest.fixture
def reference() -> RRDBNet:
    return tiny_rrdbnet()


@pytest.fixture
def runtime(loom_runtime):
    """Core's built-ins and this plugin on the CPU; ``models/upscale_models`` exists."""
    built = loom_runtime("upscale", settings={"cpu_only": True})
    (built.settings.models_dir / "upscale_models").mkdir(parents=True, exist_ok=True)
    built.settings.input_dir.mkdir(parents=True, exist_ok=True)
    return built


@pytest.fixture
def models_dir(runtime) -> Path:
    return runtime.settings.models_dir / "upscale_models"


@pytest.fixture
def esrgan_file(models_dir, reference) -> str:
    """The reference's weights as ``RealESRGAN_x4plus``-layout safetensors; returns its name."""
    write_model(models_dir, "tiny-x4.safetensors", reference.state_dict())
    return "tiny-x4.safetensors"
