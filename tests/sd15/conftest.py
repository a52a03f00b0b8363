"""Fixtures for the sd15 tests: tiny checkpoints, the real CLIP-L tokenizer, a runtime."""

from __future__ import annotations

from pathlib import Path

import pytest
from sd15_markers import TOKENIZERS


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny SD1.5-layout checkpoint (fp32, real CLIP-L vocabulary size)."""
    from loom_sd15.tiny import write_tiny_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny-sd15.safetensors"
    return write_tiny_checkpoint(path, seed=0)


@pytest.fixture
def base_dir(tmp_path, tiny_checkpoint) -> Path:
    """A base directory with the tiny checkpoint and an extra_model_paths.yaml for tokenizers."""
    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    # linked from elsewhere, as users share model folders: listing, validation and loading
    # all follow the link (ComfyUI does)
    (checkpoints / "tiny.safetensors").symlink_to(tiny_checkpoint)
    (tmp_path / "extra_model_paths.yaml").write_text(
        f"shared:\n  tokenizers: {TOKENIZERS}\n", encoding="utf-8"
    )
    (tmp_path / "input").mkdir()
    return tmp_path


@pytest.fixture
def runtime(base_dir):
    from loom.runtime import Runtime
    from loom.settings import Settings

    settings = Settings(
        base_directory=base_dir,
        extra_model_paths=[base_dir / "extra_model_paths.yaml"],
        load_custom_nodes=False,
    )
    return Runtime(settings)
