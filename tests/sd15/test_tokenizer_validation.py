"""``loom validate`` reports a tokenizer the text encoder will not find, before anything runs
(issue 15): the files, and the folder to put them in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sd15_markers import needs_samplers
from test_sd15_workflows import txt2img

from loom.cli.main import main

#: The workflow validated is ComfyUI's default txt2img, whose KSampler loom-samplers provides.
pytestmark = [needs_samplers]


@pytest.fixture
def no_shipped_tokenizer(monkeypatch):
    """As if the package's tokenizer files had been removed and no HF cache existed."""
    from loom_sd15 import tokenizer

    monkeypatch.setattr(tokenizer, "packaged", lambda name: None)
    monkeypatch.setattr(tokenizer, "_hf_cache", lambda name: None)
    monkeypatch.delenv(tokenizer.ENV_PATH, raising=False)


@pytest.fixture
def workdir(tmp_path, tiny_checkpoint, monkeypatch) -> Path:
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, tmp_path / "models" / "checkpoints" / "tiny.safetensors")
    (tmp_path / "wf.json").write_text(json.dumps(txt2img()))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_validate_names_the_missing_tokenizer_files_and_folder(
    workdir, no_shipped_tokenizer, capsys
):
    assert main(["--base-directory", str(workdir), "validate", "wf.json"]) == 2
    err = capsys.readouterr().err
    assert "CheckpointLoaderSimple" in err
    assert "vocab.json" in err and "merges.txt" in err
    assert str(workdir / "models" / "tokenizers" / "clip_l") in err
    assert "Traceback" not in err


def test_a_user_tokenizer_folder_satisfies_validation(workdir, no_shipped_tokenizer, capsys):
    from loom_sd15.demo import write_demo_tokenizer

    write_demo_tokenizer(workdir / "models" / "tokenizers" / "clip_l")
    assert main(["--base-directory", str(workdir), "validate", "wf.json"]) == 0
    assert "1 output node(s) would run" in capsys.readouterr().out


def test_a_checkpoint_whose_clip_nothing_uses_needs_no_tokenizer(workdir, no_shipped_tokenizer):
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1},
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "t", "images": ["8", 0]}},
    }
    (workdir / "vae_only.json").write_text(json.dumps(prompt))
    assert main(["--base-directory", str(workdir), "validate", "vae_only.json"]) == 0


def test_shipped_tokenizer_files_pass_validation(workdir, capsys):
    assert main(["--base-directory", str(workdir), "validate", "wf.json"]) == 0
