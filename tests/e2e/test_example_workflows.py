"""The README's main-job command, run as a user would: the installed `loom` script."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "examples" / "workflows"


def loom(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "loom"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "loom.cli.main"]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def digests(paths: list[str]) -> list[str]:
    from PIL import Image

    return [hashlib.sha256(Image.open(p).tobytes()).hexdigest() for p in paths]


@pytest.mark.slow
def test_api_and_ui_example_workflows_run_and_agree(tmp_path):
    api = loom("run", str(WORKFLOWS / "image_ops_api.json"), cwd=tmp_path)
    assert api.returncode == 0, api.stderr
    api_paths = api.stdout.split()
    assert [Path(p).name for p in api_paths] == [
        "loom_example_00001_.png",
        "loom_example_00002_.png",
    ]
    ui = loom("run", str(WORKFLOWS / "image_ops_ui.json"), cwd=tmp_path)
    assert ui.returncode == 0, ui.stderr
    ui_paths = ui.stdout.split()
    assert [Path(p).name for p in ui_paths] == [
        "loom_example_00003_.png",
        "loom_example_00004_.png",
    ]
    assert digests(api_paths) == digests(ui_paths)
    from PIL import Image

    assert "workflow" in Image.open(ui_paths[0]).text  # drag the PNG back into ComfyUI


def test_cli_reports_a_missing_file_without_traceback(tmp_path):
    result = loom("run", "missing.json", cwd=tmp_path)
    assert result.returncode != 0
    assert "missing.json" in result.stderr and "Traceback" not in result.stderr


def test_loom_script_is_installed():
    assert shutil.which("loom") or (Path(sys.executable).parent / "loom").exists()
