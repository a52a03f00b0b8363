"""``loom validate`` names a missing T5 tokenizer of a Flux text encoder before anything runs
(issue 15): the file and the folder to put it in. The text encoder comes from
``DualCLIPLoader type=flux`` or from an all-in-one Flux checkpoint that carries T5."""

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


@pytest.fixture
def no_shipped_t5(tmp_path, monkeypatch):
    """As if loom-flux's packaged T5 tokenizer files had been removed."""
    from loom_flux import t5_tokenizer

    monkeypatch.setattr(t5_tokenizer, "packaged_tokenizer_dir", lambda: tmp_path / "removed")


def checkpoint_prompt(ckpt_name: str) -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "9": {"class_type": "PreviewAny", "inputs": {"source": ["6", 0]}},
    }


@pytest.fixture
def aio_workdir(base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny all-in-one Flux checkpoint (DiT, T5, CLIP-L, VAE) behind CheckpointLoaderSimple."""
    (base_dir / "wf.json").write_text(json.dumps(checkpoint_prompt("tiny-flux-aio.safetensors")))
    monkeypatch.chdir(base_dir)
    return base_dir


def test_validate_names_the_missing_t5_tokenizer_of_an_all_in_one_checkpoint(
    aio_workdir, no_shipped_t5, capsys
):
    assert main(["--base-directory", str(aio_workdir), "validate", "wf.json"]) == 2
    err = capsys.readouterr().err
    assert "CheckpointLoaderSimple" in err and "'ckpt_name'" in err
    assert "tiny-flux-aio.safetensors" in err and "tokenizer.json" in err
    assert str(aio_workdir / "models" / "tokenizers" / "t5xxl") in err
    assert "Traceback" not in err
    shutil.copytree(
        Path(__file__).parents[2] / "plugins/flux/src/loom_flux/tokenizers/t5xxl",
        aio_workdir / "models" / "tokenizers" / "t5xxl",
    )
    assert main(["--base-directory", str(aio_workdir), "validate", "wf.json"]) == 0


def test_prompt_with_an_all_in_one_checkpoint_and_no_t5_tokenizer_is_rejected(
    runtime, no_shipped_t5
):
    """What ``POST /prompt`` answers 400 with: the node's error names input and folder."""
    from loom.errors import PromptValidationError

    with pytest.raises(PromptValidationError) as rejected:
        runtime.executor.validate(checkpoint_prompt("tiny-flux-aio.safetensors"))
    text = json.dumps(rejected.value.node_errors["4"])
    assert "ckpt_name" in text and "tokenizers/t5xxl" in text


def test_the_check_reads_headers_and_imports_no_torch(aio_workdir):
    """``loom validate`` of the all-in-one prompt in a fresh process: torch never imported."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from loom.cli.main import main\n"
        f"code = main(['--base-directory', {str(aio_workdir)!r}, 'validate', 'wf.json'])\n"
        "assert code == 0, code\n"
        "assert 'torch' not in sys.modules, 'validation imported torch'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=aio_workdir
    )
    assert result.returncode == 0, result.stderr


def test_an_sd15_checkpoint_needs_no_t5_tokenizer(tmp_path, no_shipped_t5, monkeypatch):
    from loom_sd15.tiny import write_tiny_checkpoint

    write_tiny_checkpoint(tmp_path / "models" / "checkpoints" / "sd15.safetensors")
    (tmp_path / "wf.json").write_text(json.dumps(checkpoint_prompt("sd15.safetensors")))
    monkeypatch.chdir(tmp_path)
    assert main(["--base-directory", str(tmp_path), "validate", "wf.json"]) == 0
