"""``loom validate`` names a missing T5 tokenizer of a Flux text encoder before anything runs
(issue 15): the file and the folder to put it in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from loom.cli.main import main


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    encoders = tmp_path / "models" / "text_encoders"
    encoders.mkdir(parents=True)
    for name in ("clip_l.safetensors", "t5xxl.safetensors"):  # names only: validation reads none
        (encoders / name).write_bytes(b"")
    prompt = {
        "1": {
            "class_type": "DualCLIPLoader",
            "inputs": {
                "clip_name1": "clip_l.safetensors",
                "clip_name2": "t5xxl.safetensors",
                "type": "flux",
            },
        },
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }
    (tmp_path / "wf.json").write_text(json.dumps(prompt))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_validate_names_the_missing_t5_tokenizer(workdir, monkeypatch, capsys):
    from loom_flux import t5_tokenizer

    monkeypatch.setattr(t5_tokenizer, "packaged_tokenizer_dir", lambda: workdir / "removed")
    assert main(["--base-directory", str(workdir), "validate", "wf.json"]) == 2
    err = capsys.readouterr().err
    assert "DualCLIPLoader" in err and "tokenizer.json" in err
    assert str(workdir / "models" / "tokenizers" / "t5xxl") in err
    # the user's folder satisfies it
    shutil.copytree(
        Path(t5_tokenizer.__file__).parent / "tokenizers" / "t5xxl",
        workdir / "models" / "tokenizers" / "t5xxl",
    )
    assert main(["--base-directory", str(workdir), "validate", "wf.json"]) == 0


def test_shipped_t5_tokenizer_passes_validation(workdir):
    assert main(["--base-directory", str(workdir), "validate", "wf.json"]) == 0
