"""Classic ComfyUI ``custom_nodes/`` folders load as one plugin per package."""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from loom.custom_nodes import CustomNodePackage, discover, package_name, register_custom_nodes
from loom.errors import DuplicateRegistrationError, PluginLoadError
from loom.plugins import PluginHost
from loom.registry import collect
from loom.settings import Settings
from loom.testing import make_host, make_runtime

CLASSIC_NODE = """
class {cls}:
    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{"value": ("INT", {{"default": 1, "min": 0}})}}}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "custom"

    def run(self, value):
        return (value * {factor},)
"""


def write(path: Path, source: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")


@pytest.fixture(autouse=True)
def _forget_custom_nodes_modules() -> Iterator[None]:
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name == "custom_nodes" or name.startswith("custom_nodes."):
            del sys.modules[name]


@pytest.fixture
def custom_nodes(tmp_path: Path) -> Path:
    """A custom_nodes folder with a good package, a module file and things to skip."""
    root = tmp_path / "custom_nodes"
    # A package whose nodes live in a submodule reached by relative imports.
    write(
        root / "good_pack" / "__init__.py",
        """
        from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
        WEB_DIRECTORY = "./js"
    """,
    )
    write(root / "good_pack" / "helpers.py", "FACTOR = 3\n")
    write(
        root / "good_pack" / "nodes.py",
        CLASSIC_NODE.format(cls="Triple", factor="FACTOR")
        + """
from .helpers import FACTOR

NODE_CLASS_MAPPINGS = {"GoodTriple": Triple}
NODE_DISPLAY_NAME_MAPPINGS = {"GoodTriple": "Triple It"}
""",
    )
    write(root / "good_pack" / "js" / "ext.js", "console.log('hi')\n")
    # A single-file package.
    write(
        root / "single_file.py",
        CLASSIC_NODE.format(cls="Double", factor=2)
        + """
NODE_CLASS_MAPPINGS = {"SingleDouble": Double}
""",
    )
    # A package that fails to import (as a real pack needing ComfyUI's modules would).
    write(
        root / "broken_pack" / "__init__.py",
        """
        raise RuntimeError("broken on purpose")
    """,
    )
    # Skipped: disabled, hidden, caches, folders without __init__.py, other files.
    for skipped in ("off_pack.disabled", ".hidden_pack", "__pycache__"):
        write(
            root / skipped / "__init__.py",
            CLASSIC_NODE.format(cls="Nope", factor=0)
            + """
NODE_CLASS_MAPPINGS = {"ShouldNotLoad": Nope}
""",
        )
    write(root / "off_file.py.disabled", "raise RuntimeError('must not be imported')\n")
    write(root / "no_init" / "nodes.py", "raise RuntimeError('must not be imported')\n")
    write(root / "README.md", "not python\n")
    return root


def new_host() -> PluginHost:
    return make_host(builtins=False)


def test_discover_skips_disabled_hidden_and_non_packages(custom_nodes: Path) -> None:
    names = [path.name for path in discover([custom_nodes, custom_nodes / "missing"])]
    assert names == ["broken_pack", "good_pack", "single_file.py"]


def test_package_name() -> None:
    assert package_name(Path("/x/comfyui-foo@1.2.3")) == "comfyui-foo"
    assert package_name(Path(__file__)) == "test_custom_nodes"


def test_custom_nodes_load_and_register(custom_nodes: Path) -> None:
    host = new_host()
    register_custom_nodes(host, [custom_nodes])
    registry = collect(host)

    good = registry.nodes["GoodTriple"]
    assert good.python_module == "custom_nodes.good_pack"
    assert good.display_name == "Triple It"
    single = registry.nodes["SingleDouble"]
    assert single.python_module == "custom_nodes.single_file"
    assert single.display_name is None
    assert "ShouldNotLoad" not in registry.nodes
    assert registry.owner[("node", "GoodTriple")] == "custom_nodes.good_pack"
    assert not registry.failures
    assert sys.modules["custom_nodes.good_pack.helpers"].FACTOR == 3  # relative import worked


def test_custom_nodes_run(custom_nodes: Path) -> None:
    host = new_host()
    register_custom_nodes(host, [custom_nodes])
    node = collect(host).nodes["GoodTriple"]
    output = node.impl.execute(node.impl.create(), {"value": 5}, None)
    assert output.values == (15,)


def test_broken_package_is_reported_and_others_load(custom_nodes: Path) -> None:
    host = new_host()
    register_custom_nodes(host, [custom_nodes])

    [failure] = host.failures
    assert isinstance(failure, PluginLoadError)
    assert failure.plugin == "custom_nodes.broken_pack"
    assert "RuntimeError: broken on purpose" in str(failure)
    # names the pack's own line, not the import machinery's or Loom's loader's
    assert str(failure).endswith(f"(at {custom_nodes / 'broken_pack' / '__init__.py'} line 2)")
    assert "custom_nodes.broken_pack" not in sys.modules
    assert sorted(info.name for info in host.infos) == [
        "custom_nodes.good_pack",
        "custom_nodes.single_file",
    ]


def test_plugin_object_records_web_directory(custom_nodes: Path) -> None:
    host = new_host()
    register_custom_nodes(host, [custom_nodes])

    good = host.pm.get_plugin("custom_nodes.good_pack")
    assert isinstance(good, CustomNodePackage)
    assert good.web_directory == (custom_nodes / "good_pack" / "js").resolve()
    assert good.web_directory.is_absolute()
    assert host.pm.get_plugin("custom_nodes.single_file").web_directory is None


def test_import_time_logged_at_info(custom_nodes: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="loom.custom_nodes"):
        register_custom_nodes(new_host(), [custom_nodes])
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("good_pack" in line and " s" in line for line in lines)


def test_package_disabled_by_name(custom_nodes: Path) -> None:
    host = PluginHost(builtins=(), entry_points=False, disabled={"good_pack"}).load()
    register_custom_nodes(host, [custom_nodes])
    assert "GoodTriple" not in collect(host).nodes
    assert "custom_nodes.good_pack" not in sys.modules


def test_package_without_mappings_is_reported(tmp_path: Path) -> None:
    write(tmp_path / "empty_pack" / "__init__.py", "X = 1\n")
    host = new_host()
    register_custom_nodes(host, [tmp_path])
    [failure] = host.failures
    assert failure.plugin == "custom_nodes.empty_pack"
    assert "NODE_CLASS_MAPPINGS" in str(failure)


def test_same_name_in_two_folders_loads_once(custom_nodes: Path, tmp_path: Path) -> None:
    other = tmp_path / "more_custom_nodes"
    write(
        other / "single_file.py",
        CLASSIC_NODE.format(cls="Other", factor=5)
        + """
NODE_CLASS_MAPPINGS = {"OtherNode": Other}
""",
    )
    host = new_host()
    register_custom_nodes(host, [custom_nodes, other])
    registry = collect(host)
    assert "SingleDouble" in registry.nodes and "OtherNode" not in registry.nodes
    assert any(
        f.plugin == "custom_nodes.single_file" and "already loaded" in str(f) for f in host.failures
    )


def test_duplicate_class_type_with_a_plugin(custom_nodes: Path, tmp_path: Path) -> None:
    other = tmp_path / "second"
    write(
        other / "copycat.py",
        CLASSIC_NODE.format(cls="Copy", factor=1)
        + """
NODE_CLASS_MAPPINGS = {"GoodTriple": Copy}
""",
    )
    host = new_host()
    register_custom_nodes(host, [custom_nodes, other])
    registry = collect(host)
    [failure] = registry.failures
    assert isinstance(failure, DuplicateRegistrationError)
    assert "custom_nodes.good_pack" in str(failure) and "custom_nodes.copycat" in str(failure)


def test_a_malformed_node_is_reported_others_register(tmp_path: Path) -> None:
    write(
        tmp_path / "half_good.py",
        CLASSIC_NODE.format(cls="Fine", factor=1)
        + """
class NoFunction:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}
    RETURN_TYPES = ()
    FUNCTION = "missing"

NODE_CLASS_MAPPINGS = {"FineNode": Fine, "BadNode": NoFunction}
""",
    )
    host = new_host()
    register_custom_nodes(host, [tmp_path])
    registry = collect(host)
    assert "FineNode" in registry.nodes and "BadNode" not in registry.nodes
    assert "BadNode" in str(registry.failures[0])


def test_runtime_loads_custom_nodes_from_base_directory(custom_nodes: Path) -> None:
    settings = Settings(base_directory=custom_nodes.parent)
    runtime = make_runtime(builtins=("loom.folders",), settings=settings)
    assert runtime.registry.nodes["GoodTriple"].python_module == "custom_nodes.good_pack"
    assert [f.plugin for f in runtime.host.failures] == ["custom_nodes.broken_pack"]


def test_runtime_can_skip_custom_nodes(custom_nodes: Path) -> None:
    settings = Settings(base_directory=custom_nodes.parent, load_custom_nodes=False)
    runtime = make_runtime(builtins=("loom.folders",), settings=settings)
    assert "GoodTriple" not in runtime.registry.nodes


def test_runtime_loads_custom_nodes_named_by_extra_model_paths(
    custom_nodes: Path, tmp_path: Path
) -> None:
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(f"elsewhere:\n    custom_nodes: {custom_nodes}\n")
    settings = Settings(base_directory=tmp_path / "empty_base", extra_model_paths=[config])
    runtime = make_runtime(builtins=("loom.folders",), settings=settings)
    assert runtime.registry.nodes["GoodTriple"].python_module == "custom_nodes.good_pack"
    assert runtime.folders.custom_nodes_paths == [custom_nodes]
