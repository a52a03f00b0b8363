"""Packaging: the wheel holds every core module; plugins follow the naming conventions."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "core"
PLUGIN_PYPROJECTS = sorted((REPO / "plugins").glob("*/pyproject.toml"))


def _pyproject(path: Path) -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _core_packages() -> set[str]:
    """``loom.*`` names of every folder under core/ that holds Python code."""
    found = set()
    for folder in [CORE, *(p for p in CORE.rglob("*") if p.is_dir())]:
        if "__pycache__" in folder.parts or not any(folder.glob("*.py")):
            continue
        found.add(".".join(("loom", *folder.relative_to(CORE).parts)))
    return found


def test_every_core_package_is_listed_in_pyproject() -> None:
    setuptools = _pyproject(REPO / "pyproject.toml")["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"loom": "core"}
    listed = set(setuptools["packages"])
    missing = _core_packages() - listed
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"
    for name in listed:
        folder = CORE.joinpath(*name.split(".")[1:])
        assert folder.is_dir(), f"pyproject.toml lists {name} but {folder} does not exist"


def test_every_core_package_has_an_init() -> None:
    for name in sorted(_core_packages()):
        init = CORE.joinpath(*name.split(".")[1:], "__init__.py")
        if not init.exists():
            pytest.xfail(f"{name} has no __init__.py yet")  # a namespace package still imports


def _needs_build_tools() -> None:
    # find_spec, not import: importing setuptools here would patch distutils in this process.
    for name in ("pip", "setuptools"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed")


@pytest.mark.slow
def test_wheel_contains_every_core_module(tmp_path: Path) -> None:
    _needs_build_tools()
    source = tmp_path / "src"
    shutil.copytree(CORE, source / "core", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    assert (source / "core" / "py.typed").is_file()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    [wheel] = (tmp_path / "dist").glob("loom_core-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "loom/" + p.relative_to(source / "core").as_posix() for p in (source / "core").rglob("*.py")
    }
    assert expected - names == set()
    assert "loom/py.typed" in names  # type checkers read the annotations of plugins' imports


@pytest.mark.parametrize("pyproject", PLUGIN_PYPROJECTS, ids=lambda p: p.parent.name)
def test_plugin_follows_naming_conventions(pyproject: Path) -> None:
    folder = pyproject.parent.name
    project = _pyproject(pyproject)["project"]
    assert project["name"] == f"loom-{folder}"
    assert any(
        dep.replace(" ", "").startswith("loom-core") for dep in project.get("dependencies", [])
    )
    entry_points = project.get("entry-points", {}).get("loom", {})
    package = f"loom_{folder.replace('-', '_')}"  # plugins/comfy-compat -> loom_comfy_compat
    assert entry_points == {folder: f"{package}.plugin"}
    assert (pyproject.parent / "src" / package / "plugin.py").is_file()


@pytest.mark.parametrize("folder", ["sd15", "lora", "http"])
def test_plugin_ships_py_typed(folder: str) -> None:
    pyproject = REPO / "plugins" / folder / "pyproject.toml"
    package_data = _pyproject(pyproject)["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data[f"loom_{folder}"]
    assert (pyproject.parent / "src" / f"loom_{folder}" / "py.typed").is_file()


def test_example_plugin_follows_conventions() -> None:
    project = _pyproject(REPO / "examples" / "loom-example-plugin" / "pyproject.toml")["project"]
    assert project["entry-points"]["loom"] == {"example": "loom_example_plugin.plugin"}
    assert any(dep.startswith("loom-core") for dep in project["dependencies"])
