"""Fixtures for the flux tests: tiny Flux files in a models folder, a runtime."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from flux_markers import TOKENIZERS


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """``models/`` with a tiny dev-style DiT, T5, CLIP-L and VAE, plus an all-in-one file."""
    from loom_flux.tiny import checkpoint_state, save, tiny_spec, write_tiny_files

    models = tmp_path_factory.mktemp("flux") / "models"
    write_tiny_files(models, seed=0)
    save(
        checkpoint_state(tiny_spec(), seed=0), models / "checkpoints" / "tiny-flux-aio.safetensors"
    )
    return models


@pytest.fixture
def base_dir(tmp_path, tiny_models) -> Path:
    for source in tiny_models.rglob("*.safetensors"):
        target = tmp_path / "models" / source.relative_to(tiny_models)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:  # a hard link: core refuses symlinks that resolve outside the model folder
            os.link(source, target)
        except OSError:
            shutil.copy(source, target)
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
