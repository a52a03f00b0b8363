"""Fixtures for the sdxl tests: tiny SDXL-layout files, the real CLIP-L tokenizer, a runtime."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory) -> dict[str, Path]:
    """Tiny base, refiner and inpaint checkpoints plus the base's standalone part files."""
    from loom_sd15.tiny import save_checkpoint
    from loom_sdxl.tiny import checkpoint_state, split_files, tiny_spec

    root = tmp_path_factory.mktemp("sdxl")
    files: dict[str, Path] = {}
    spec = tiny_spec()
    state = checkpoint_state(spec, seed=0)
    files["base"] = save_checkpoint(root / "tiny-sdxl.safetensors", state)
    for name, part in split_files(state, spec).items():
        files[name] = save_checkpoint(root / f"tiny-sdxl-{name}.safetensors", part)
    refiner = tiny_spec(refiner=True)
    files["refiner"] = save_checkpoint(
        root / "tiny-sdxl-refiner.safetensors", checkpoint_state(refiner, seed=1)
    )
    inpaint = tiny_spec(inpaint=True)
    files["inpaint"] = save_checkpoint(
        root / "tiny-sdxl-inpaint.safetensors", checkpoint_state(inpaint, seed=2)
    )
    return files


FOLDERS = {
    "base": ("checkpoints", "sdxl.safetensors"),
    "refiner": ("checkpoints", "sdxl-refiner.safetensors"),
    "inpaint": ("checkpoints", "sdxl-inpaint.safetensors"),
    "unet": ("diffusion_models", "sdxl-unet.safetensors"),
    "vae": ("vae", "sdxl-vae.safetensors"),
    "clip_l": ("text_encoders", "clip_l.safetensors"),
    "clip_g": ("text_encoders", "clip_g.safetensors"),
}


@pytest.fixture
def base_dir(tmp_path, tiny_files, shared_tokenizers) -> Path:
    """A base directory holding every tiny file in its model folder, tokenizers configured."""
    for key, (folder, name) in FOLDERS.items():
        target = tmp_path / "models" / folder
        target.mkdir(parents=True, exist_ok=True)
        (target / name).symlink_to(tiny_files[key])
    (tmp_path / "extra_model_paths.yaml").write_text(
        f"shared:\n  tokenizers: {shared_tokenizers}\n", encoding="utf-8"
    )
    (tmp_path / "input").mkdir()
    return tmp_path


@pytest.fixture
def runtime(base_dir, loom_runtime):
    """Core's built-ins, loom-sd15, loom-sdxl, loom-samplers and loom-lora over ``base_dir``."""
    extra = [base_dir / "extra_model_paths.yaml"]
    return loom_runtime("sd15", "sdxl", "samplers", "lora", settings={"extra_model_paths": extra})
