"""The public surface: plugins import only what ``loom`` exports or lists in PUBLIC_MODULES."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import loom

REPO = Path(__file__).resolve().parents[2]
#: Plugins held to the public surface (the ones core's maintainers adapt with it).
PLUGINS = (
    "sd15",
    "lora",
    "http",
    "samplers",
    "sdxl",
    "flux",
    "upscale",
    "clip-vision",
    "controlnet",
    "redis",
    "comfy-compat",
)


def public_names(module_name: str) -> set[str]:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [name for name in vars(module) if not name.startswith("_")]
    return set(names)


def loom_uses(path: Path) -> Iterator[tuple[int, str, str]]:
    """``(line, module, name)`` for every name a source file takes from the loom package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for item in ast.walk(tree):
        if isinstance(item, ast.ImportFrom) and item.level == 0 and item.module:
            if item.module == "loom" or item.module.startswith("loom."):
                for alias in item.names:
                    yield item.lineno, item.module, alias.name
        elif isinstance(item, ast.Import):
            for alias in item.names:
                if alias.name.startswith("loom."):
                    yield item.lineno, alias.name, "*"
        elif (
            isinstance(item, ast.Attribute)
            and isinstance(item.value, ast.Name)
            and item.value.id == "loom"
        ):
            yield item.lineno, "loom", item.attr


def violations(path: Path, root: Path = REPO) -> list[str]:
    found = []
    for line, module, name in loom_uses(path):
        where = f"{path.relative_to(root)}:{line}"
        if module == "loom":
            if name not in loom.__all__ and f"loom.{name}" not in loom.PUBLIC_MODULES:
                found.append(f"{where}: loom.{name} is not exported by loom")
        elif module not in loom.PUBLIC_MODULES:
            found.append(f"{where}: {module} is internal (public: loom.PUBLIC_MODULES)")
        elif name != "*" and name not in public_names(module):
            found.append(f"{where}: {name} is not public in {module}")
    return found


@pytest.mark.parametrize("plugin", PLUGINS)
def test_plugin_uses_only_the_public_surface(plugin: str) -> None:
    sources = sorted((REPO / "plugins" / plugin / "src").rglob("*.py"))
    assert sources
    problems = [problem for path in sources for problem in violations(path)]
    assert problems == []


def test_the_check_catches_an_internal_import(tmp_path: Path) -> None:
    source = tmp_path / "plugin.py"
    source.write_text(
        "import loom\nfrom loom.executor.graph import is_link\nfrom loom.types import Nope\n"
        "x = loom.registry\n"
    )
    assert violations(source, root=tmp_path) == [
        "plugin.py:2: loom.executor.graph is internal (public: loom.PUBLIC_MODULES)",
        "plugin.py:3: Nope is not public in loom.types",
        "plugin.py:4: loom.registry is not exported by loom",
    ]


def test_public_modules_import_and_every_exported_name_exists() -> None:
    for name in loom.__all__:
        assert hasattr(loom, name), name
    for module_name in loom.PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            assert hasattr(module, name), f"{module_name}.{name}"


def test_importing_loom_stays_cheap() -> None:
    code = "import sys, loom; print(sorted(m for m in ('torch', 'loom.registry', 'yaml') if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


def test_the_hooks_contract_is_public_and_torch_free() -> None:
    assert "loom.hooks" in loom.PUBLIC_MODULES
    code = "import sys, loom.hooks; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "False"
