"""Fixtures for loom-comfy-compat: packs written into a tmp ``custom_nodes/`` and run
through the real CLI (``loom.cli.main.main``) or a runtime with every installed plugin."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loom.runtime import Runtime
from loom.settings import Settings

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


@pytest.fixture(autouse=True)
def _fresh_packs() -> Iterator[None]:
    """Custom-node modules imported by a test are forgotten after it."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name == "custom_nodes" or name.startswith("custom_nodes."):
            del sys.modules[name]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "custom_nodes").mkdir()
    return tmp_path


@pytest.fixture
def write_pack(base: Path) -> Callable[..., Path]:
    """``write_pack("name", {"__init__.py": source, ...})`` under ``base/custom_nodes``."""

    def write(name: str, files: dict[str, str]) -> Path:
        root = base / "custom_nodes" / name
        for relative, source in files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source), encoding="utf-8")
        return root

    return write


@pytest.fixture
def make_runtime(base: Path) -> Callable[[], Runtime]:
    def make() -> Runtime:
        runtime = Runtime(Settings(base_directory=base))
        _ = runtime.registry
        return runtime

    return make


@pytest.fixture
def run_cli(base: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., Any]:
    """``run_cli(prompt)`` runs ``loom run`` on it; returns (exit code, stdout, stderr)."""
    from loom.cli.main import main

    def run(prompt: dict[str, Any], *args: str, quiet: bool = True) -> tuple[int, str, str]:
        path = base / "prompt.json"
        path.write_text(json.dumps(prompt), encoding="utf-8")
        flags = ["-q"] if quiet else []
        code = main(["--base-directory", str(base), "run", str(path), *flags, *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
