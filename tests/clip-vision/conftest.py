"""Fixtures for the clip-vision tests: tiny CLIP, SigLIP and Redux files in a models folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from clip_vision_tiny import REDUX_TEXT_DIM


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory) -> Path:
    """``models/`` with a tiny CLIP vision tower, a SigLIP tower and a Redux style model."""
    from loom_clip_vision.style import ReduxConfig
    from loom_clip_vision.tiny import (
        redux_state,
        save,
        tiny_clip_config,
        tiny_siglip_config,
        vision_state,
    )

    models = tmp_path_factory.mktemp("clip_vision") / "models"
    save(
        vision_state(tiny_clip_config(), seed=0),
        models / "clip_vision" / "tiny-clip-vision.safetensors",
    )
    save(
        vision_state(tiny_siglip_config(), seed=1),
        models / "clip_vision" / "tiny-siglip.safetensors",
    )
    redux = ReduxConfig(image_dim=32, hidden_dim=3 * REDUX_TEXT_DIM, text_dim=REDUX_TEXT_DIM)
    save(redux_state(redux, seed=2), models / "style_models" / "tiny-redux.safetensors")
    return models


@pytest.fixture
def runtime(tmp_path, tiny_files, loom_runtime):
    """Core's built-ins and this plugin over a base directory linking the tiny files."""
    for source in tiny_files.rglob("*.safetensors"):
        target = tmp_path / "models" / source.relative_to(tiny_files)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source)
    (tmp_path / "input").mkdir(exist_ok=True)
    return loom_runtime("clip-vision")
