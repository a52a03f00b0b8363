""".ci/packages.py: what CI installs for each package, read from the pyproject files."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def packages():
    spec = importlib.util.spec_from_file_location("loom_ci_packages", REPO / ".ci" / "packages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_project(folder: Path, name: str, dependencies: list[str], test: list[str] = ()) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(
        textwrap.dedent(f"""
            [project]
            name = "{name}"
            dependencies = {dependencies!r}

            [project.optional-dependencies]
            test = {list(test)!r}
        """)
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Core, the example, and plugins that depend on each other the ways Loom's do."""
    write_project(tmp_path, "loom-core", ["torch>=2.1", "attrs>=23.1"], ["pytest>=8"])
    write_project(
        tmp_path / "examples" / "loom-example-plugin", "loom-example-plugin", ["loom-core"]
    )
    write_project(
        tmp_path / "plugins" / "sd15", "loom-sd15", ["loom-core>=0.1,<0.2", "transformers"]
    )
    write_project(tmp_path / "plugins" / "sdxl", "loom-sdxl", ["loom-core", "loom_sd15>=0.1"])
    write_project(
        tmp_path / "plugins" / "flux", "loom-flux", ["Loom.SDXL", "einops"], ["diffusers"]
    )
    write_project(tmp_path / "plugins" / "http", "loom-http", ["loom-core", "aiohttp>=3.9"])
    write_project(tmp_path / "plugins" / "redis", "loom-redis", ["redis>=5"], ["loom-http"])
    write_project(
        tmp_path / "plugins" / "comfy-compat",
        "loom-comfy-compat",
        ['loom-http ; python_version >= "3.10"'],
    )
    return tmp_path


def test_each_plugin_gets_its_declared_loom_plugins_dependencies_first(packages, tree) -> None:
    assert packages.plugins(tree) == {
        "comfy-compat": ["http"],
        "flux": ["sd15", "sdxl"],
        "http": [],
        "redis": ["http"],
        "sd15": [],
        "sdxl": ["sd15"],
    }


def test_requirements_are_third_party_only_without_torch(packages, tree) -> None:
    assert packages.requirements(tree) == [
        "attrs>=23.1",
        "pytest>=8",
        "einops",
        "diffusers",
        "aiohttp>=3.9",
        "redis>=5",
        "transformers",
    ]


def test_the_repository_has_tests_for_every_plugin(packages) -> None:
    for plugin in packages.plugins():
        candidates = [REPO / "tests" / plugin, REPO / "tests" / plugin.replace("-", "_")]
        assert any(path.is_dir() for path in candidates), f"plugins/{plugin} has no tests/{plugin}"


def test_no_deps_requirements_are_listed_apart_and_never_as_plain_requirements(
    packages, tree
) -> None:
    folder = tree / "plugins" / "upscale"
    write_project(folder, "loom-upscale", ["loom-core", "einops>=0.6", "spandrel>=0.4"])
    with (folder / "pyproject.toml").open("a") as file:
        file.write('\n[tool.loom]\nno-deps-requirements = ["spandrel==0.4.2"]\n')
    assert packages.no_deps_requirements(tree) == ["spandrel==0.4.2"]
    found = packages.requirements(tree)
    assert "einops>=0.6" in found and not [r for r in found if r.startswith("spandrel")]


def test_the_repository_installs_spandrel_without_its_dependencies(packages) -> None:
    assert [r for r in packages.no_deps_requirements() if r.startswith("spandrel")]
    assert not [r for r in packages.requirements() if r.startswith(("spandrel", "torchvision"))]
