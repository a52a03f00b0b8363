"""The hooks through which a plugin adds node styles and custom-node entry points, sees the
runtime early and annotates ``loom plugins``: each with a throwaway plugin, core alone."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import loom
from loom.nodes.compat import ClassicImpl
from loom.nodes.spec import NodeDef, OutputDef
from loom.plugins import PluginHost
from loom.registry import collect
from loom.runtime import Runtime
from loom.settings import Settings


def make_host(*plugins: object) -> PluginHost:
    host = PluginHost(builtins=(), entry_points=False, disabled=(), allow=None).load()
    for index, plugin in enumerate(plugins):
        host.register(plugin, f"test_plugin_{index}")
    return host


class OwnStyleNode:
    """A node in a style only the test plugin knows: ``NODE_ID`` and ``double``."""

    NODE_ID = "OwnStyleDouble"


class _DoubleImpl(ClassicImpl):
    def __init__(self) -> None:
        pass

    def input_types(self, registry: Any) -> dict[str, Any]:
        return {"required": {"value": ("INT", {"default": 1})}}

    def create(self) -> None:
        return None

    def execute(self, obj: Any, inputs: dict[str, Any], ctx: Any) -> loom.NodeOutput:
        return loom.NodeOutput(values=(inputs["value"] * 2,))


class OwnStyleCompiler:
    @loom.hookimpl
    def compile_node(self, node_class, class_type, display_name, python_module):
        if not hasattr(node_class, "NODE_ID"):
            return None
        return NodeDef(
            class_type=class_type or node_class.NODE_ID,
            impl=_DoubleImpl(),
            outputs=(OutputDef("INT", "INT"),),
            python_module=python_module or "own",
            output_node=True,
        )


def test_hook_compile_node() -> None:
    class Registers:
        @loom.hookimpl
        def register_nodes(self, register):
            register(OwnStyleNode)

    registry = collect(make_host(OwnStyleCompiler(), Registers()))

    assert not registry.failures
    assert registry.owner[("node", "OwnStyleDouble")] == "test_plugin_1"
    result = registry.nodes["OwnStyleDouble"].impl.execute(None, {"value": 21}, None)
    assert result.values == (42,)


def test_hook_compile_node_unknown_style_is_reported() -> None:
    class Registers:
        @loom.hookimpl
        def register_nodes(self, register):
            register(object)

    registry = collect(make_host(Registers()))
    assert "no installed plugin compiles its style" in str(registry.failures[0])


@pytest.fixture
def _forget_packs() -> Iterator[None]:
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name == "custom_nodes" or name.startswith("custom_nodes."):
            del sys.modules[name]


def test_hook_custom_node_entrypoint(tmp_path: Path, _forget_packs: None) -> None:
    pack = tmp_path / "custom_nodes" / "own_pack"
    pack.mkdir(parents=True)
    (pack / "__init__.py").write_text(
        textwrap.dedent(
            """
            class Doubler:
                NODE_ID = "PackDouble"

            def own_entrypoint():
                return [Doubler]
            """
        )
    )

    class EntryPoints:
        @loom.hookimpl
        def custom_node_entrypoint(self, module, name):
            entry = getattr(module, "own_entrypoint", None)
            return entry() if entry else None

    runtime = Runtime(
        Settings(base_directory=tmp_path), make_host(OwnStyleCompiler(), EntryPoints())
    )
    registry = runtime.registry

    assert not runtime.host.failures and not registry.failures
    assert registry.nodes["PackDouble"].python_module == "custom_nodes.own_pack"
    assert registry.owner[("node", "PackDouble")] == "custom_nodes.own_pack"


def test_hook_custom_node_entrypoint_none_means_no_nodes(
    tmp_path: Path, _forget_packs: None
) -> None:
    pack = tmp_path / "custom_nodes" / "empty_pack"
    pack.mkdir(parents=True)
    (pack / "__init__.py").write_text("X = 1\n")
    runtime = Runtime(Settings(base_directory=tmp_path), make_host())
    _ = runtime.registry
    assert "defines no NODE_CLASS_MAPPINGS" in str(runtime.host.failures[0])


def test_hook_prepare_runtime(tmp_path: Path, _forget_packs: None) -> None:
    seen: list[tuple[Runtime, bool]] = []

    class Observer:
        @loom.hookimpl
        def prepare_runtime(self, runtime):
            seen.append((runtime, "registry" in vars(runtime)))

    runtime = Runtime(Settings(base_directory=tmp_path), make_host(Observer()))
    _ = runtime.registry
    _ = runtime.registry
    assert seen == [(runtime, False)]  # once, before the registry exists


def test_hook_plugin_notes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from loom.cli import main as cli_main

    class Notes:
        @loom.hookimpl
        def plugin_notes(self, plugin_name):
            return [f"note about {plugin_name}"] if plugin_name == "test_plugin_0" else None

    host = make_host(Notes())
    monkeypatch.setattr(cli_main.LoomGroup, "host", host)
    runner = CliRunner()
    factory = type(
        "Factory",
        (),
        {
            "runtime": lambda self: Runtime(
                Settings(base_directory=tmp_path, load_custom_nodes=False), host
            )
        },
    )()
    from loom.cli.commands import plugins

    result = runner.invoke(plugins, obj=factory)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("test_plugin_0"))
    assert lines[index + 1].strip() == "note about test_plugin_0"
