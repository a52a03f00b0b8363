"""Fixtures for the sd15 tests: tiny checkpoints and a runtime using the demo tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny SD1.5-layout checkpoint (fp32, real CLIP-L vocabulary size)."""
    from loom_sd15.tiny import write_tiny_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny-sd15.safetensors"
    return write_tiny_checkpoint(path, seed=0)


@pytest.fixture
def base_dir(tmp_path, tiny_checkpoint, demo_tokenizers) -> Path:
    """A base directory with the tiny checkpoint, and an extra_model_paths.yaml naming the demo
    tokenizer as its ``clip_l`` (what the words become does not matter to these tests)."""
    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    # linked from elsewhere, as users share model folders: listing, validation and loading
    # all follow the link (ComfyUI does)
    (checkpoints / "tiny.safetensors").symlink_to(tiny_checkpoint)
    (tmp_path / "extra_model_paths.yaml").write_text(
        f"shared:\n  tokenizers: {demo_tokenizers}\n", encoding="utf-8"
    )
    (tmp_path / "input").mkdir()
    return tmp_path


@pytest.fixture
def runtime(base_dir, loom_runtime):
    """Core's built-ins, loom-sd15 and loom-samplers (KSampler) over ``base_dir``."""
    extra = [base_dir / "extra_model_paths.yaml"]
    return loom_runtime("sd15", "samplers", settings={"extra_model_paths": extra})
