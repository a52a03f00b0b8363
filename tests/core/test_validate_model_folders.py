"""``loom validate``: a model-file combo with nothing in its folders names the folders searched
(issue 15), so a user sees where to put the file or which path is misconfigured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loom.cli.main import main


def _prompt(name: str) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}},
        "2": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1},
        },
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}},
    }


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    elsewhere = tmp_path / "shared" / "ckpts"
    elsewhere.mkdir(parents=True)
    (tmp_path / "extra_model_paths.yaml").write_text(
        f"shared:\n  checkpoints: {elsewhere}\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_empty_model_combo_names_every_folder_searched(workdir: Path, capsys) -> None:
    (workdir / "wf.json").write_text(json.dumps(_prompt("x.safetensors")))
    args = ["--base-directory", str(workdir), "--extra-model-paths-config"]
    assert main([*args, str(workdir / "extra_model_paths.yaml"), "validate", "wf.json"]) == 2
    err = capsys.readouterr().err
    assert "ckpt_name: 'x.safetensors' not in []" in err
    assert str(workdir / "shared" / "ckpts") in err
    assert str(workdir / "models" / "checkpoints") in err


def test_a_listed_folder_with_files_keeps_comfyuis_message(workdir: Path, capsys) -> None:
    (workdir / "shared" / "ckpts" / "real.safetensors").write_bytes(b"")
    (workdir / "wf.json").write_text(json.dumps(_prompt("x.safetensors")))
    args = ["--base-directory", str(workdir), "--extra-model-paths-config"]
    assert main([*args, str(workdir / "extra_model_paths.yaml"), "validate", "wf.json"]) == 2
    err = capsys.readouterr().err
    assert "ckpt_name: 'x.safetensors' not in ['real.safetensors']" in err
    assert "no model files found" not in err
    # the next line says where Loom looked (a ComfyUI user's models may be elsewhere)
    [line] = [x for x in err.splitlines() if x.startswith("    model files are read from: ")]
    assert str(workdir / "models" / "checkpoints") in line
    assert str(workdir / "shared" / "ckpts") in line
