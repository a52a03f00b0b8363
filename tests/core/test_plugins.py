"""The plugin host: entry-point loading, failures, disabling, allow-lists, collisions."""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import pytest

import loom
from loom import plugins
from loom.errors import DuplicateRegistrationError, PluginLoadError
from loom.plugins import PluginHost
from loom.registry import collect

NODE_PLUGIN = """
import loom

class {cls}:
    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{"value": ("INT", {{"default": 1}})}}}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, value):
        return (value,)

@loom.hookimpl
def register_nodes(register):
    register({cls}, class_type="{class_type}")
"""


@pytest.fixture
def entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """``entry_points(name, source)`` writes a plugin module and fakes its ``loom`` entry point."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("LOOM_PLUGINS", raising=False)
    monkeypatch.delenv("LOOM_DISABLE_PLUGINS", raising=False)
    fake: list[metadata.EntryPoint] = []
    monkeypatch.setattr(plugins, "_entry_points", lambda: sorted(fake, key=lambda ep: ep.name))
    modules: list[str] = []

    def add(name: str, source: str) -> None:
        module = f"loomtest_{name}_{id(fake)}"
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        fake.append(metadata.EntryPoint(name=name, value=module, group="loom"))
        modules.append(module)

    yield add
    for module in modules:
        sys.modules.pop(module, None)


def node_plugin(class_type: str) -> str:
    return NODE_PLUGIN.format(cls=f"Node{class_type}", class_type=class_type)


def host(**kwargs: object) -> PluginHost:
    return PluginHost(builtins=(), **kwargs).load()  # type: ignore[arg-type]


def test_plugin_failing_at_import_is_reported_and_others_load(entry_points) -> None:
    entry_points("good", node_plugin("GoodNode"))
    entry_points("broken", "raise RuntimeError('cannot import me')\n")
    entry_points("also_good", node_plugin("OtherNode"))

    h = host()

    assert [f.plugin for f in h.failures] == ["broken"]
    failure = h.failures[0]
    assert isinstance(failure, PluginLoadError)
    assert "broken" in str(failure) and "RuntimeError: cannot import me" in str(failure)
    assert isinstance(failure.cause, RuntimeError)
    assert sorted(info.name for info in h.infos) == ["also_good", "good"]
    assert {"GoodNode", "OtherNode"} <= set(collect(h).nodes)


def test_missing_dependency_is_reported(entry_points) -> None:
    entry_points("needs_dep", "import loom_no_such_module_anywhere\n")
    h = host()
    assert "ModuleNotFoundError" in str(h.failures[0])
    assert "loom_no_such_module_anywhere" in str(h.failures[0])


def test_plugin_failing_inside_register_hook_is_reported_and_skipped(entry_points) -> None:
    entry_points("good", node_plugin("GoodNode"))
    entry_points(
        "raises",
        """
        import loom

        @loom.hookimpl
        def register_nodes(register):
            raise ValueError("bug in my plugin")

        @loom.hookimpl
        def register_samplers(register):
            register("raises_sampler", lambda *a, **k: None)
    """,
    )

    registry = collect(host())

    assert "GoodNode" in registry.nodes
    assert "raises_sampler" in registry.samplers  # its other hooks still count
    [failure] = registry.failures
    assert isinstance(failure, PluginLoadError)
    assert failure.plugin == "raises"
    assert "ValueError: bug in my plugin" in str(failure)


def test_disable_by_name(entry_points) -> None:
    entry_points("good", node_plugin("GoodNode"))
    entry_points("unwanted", node_plugin("UnwantedNode"))
    h = host(disabled={"unwanted"})
    assert [info.name for info in h.infos] == ["good"]
    assert "UnwantedNode" not in collect(h).nodes


def test_disable_by_env(entry_points, monkeypatch: pytest.MonkeyPatch) -> None:
    entry_points("good", node_plugin("GoodNode"))
    entry_points("unwanted", node_plugin("UnwantedNode"))
    entry_points("also_unwanted", node_plugin("AlsoUnwantedNode"))
    monkeypatch.setenv("LOOM_DISABLE_PLUGINS", " unwanted , also_unwanted")
    h = host()
    assert [info.name for info in h.infos] == ["good"]
    assert not h.failures


def test_disable_env_adds_to_argument(entry_points, monkeypatch: pytest.MonkeyPatch) -> None:
    entry_points("a", node_plugin("A"))
    entry_points("b", node_plugin("B"))
    entry_points("c", node_plugin("C"))
    monkeypatch.setenv("LOOM_DISABLE_PLUGINS", "a")
    h = host(disabled={"b"})
    assert [info.name for info in h.infos] == ["c"]


def test_builtin_can_be_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOM_DISABLE_PLUGINS", "folders")
    h = PluginHost(builtins=("loom.folders",), entry_points=False).load()
    assert h.infos == []
    assert collect(h).folder_kinds == {}


def test_allow_list_env(entry_points, monkeypatch: pytest.MonkeyPatch) -> None:
    entry_points("a", node_plugin("A"))
    entry_points("b", node_plugin("B"))
    entry_points("c", node_plugin("C"))
    monkeypatch.setenv("LOOM_PLUGINS", "a,c")
    h = PluginHost(builtins=("loom.folders",)).load()
    assert [(info.name, info.builtin) for info in h.infos] == [
        ("folders", True),
        ("a", False),
        ("c", False),
    ]


def test_allow_argument_wins_over_env(entry_points, monkeypatch: pytest.MonkeyPatch) -> None:
    entry_points("a", node_plugin("A"))
    entry_points("b", node_plugin("B"))
    monkeypatch.setenv("LOOM_PLUGINS", "a")
    assert [info.name for info in host(allow={"b"}).infos] == ["b"]


def test_duplicate_class_type_names_both_plugins(entry_points) -> None:
    entry_points("first", node_plugin("SameNode"))
    entry_points("second", NODE_PLUGIN.format(cls="Other", class_type="SameNode"))

    registry = collect(host())

    [failure] = registry.failures
    assert isinstance(failure, DuplicateRegistrationError)
    assert "'first'" in str(failure) and "'second'" in str(failure) and "SameNode" in str(failure)
    owner = registry.owner[("node", "SameNode")]  # the one registered first is kept
    assert (
        registry.nodes["SameNode"].impl.cls.__name__
        == {"first": "NodeSameNode", "second": "Other"}[owner]
    )


def test_load_is_idempotent(entry_points) -> None:
    entry_points("good", node_plugin("GoodNode"))
    h = host()
    h.load()
    assert [info.name for info in h.infos] == ["good"]
    assert not h.failures


def test_plugin_info_records_version_and_timing(entry_points) -> None:
    entry_points("good", node_plugin("GoodNode"))
    [info] = host().infos
    assert info.builtin is False
    assert info.module.startswith("loomtest_good")
    assert info.import_seconds >= 0


def test_register_object_and_unregister() -> None:
    class Plugin:
        @loom.hookimpl
        def register_samplers(self, register):
            register("from_object", object())

    h = host(entry_points=False)
    h.register(Plugin(), "objplugin", version="1.2")
    assert collect(h).owner[("sampler", "from_object")] == "objplugin"
    h.register(Plugin(), "objplugin")
    assert "already loaded" in str(h.failures[-1])
    h.unregister("objplugin")
    assert "from_object" not in collect(h).samplers
    assert h.infos == []


def test_trace_hooks_logs_calls(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LOOM_TRACE_HOOKS", "1")
    h = PluginHost(builtins=("loom.folders",), entry_points=False).load()
    with caplog.at_level(logging.DEBUG, logger="loom.plugins"):
        h.hook.register_model_folders(register=lambda kind: None)
    assert any("register_model_folders" in record.getMessage() for record in caplog.records)


def test_builtins_register_before_external_plugins(entry_points) -> None:
    entry_points(
        "late",
        """
        import loom
        from loom.folders import FolderKind

        @loom.hookimpl
        def register_model_folders(register):
            register(FolderKind("checkpoints", ("more_checkpoints",), frozenset({".ckpt"})))
    """,
    )
    h = PluginHost(builtins=("loom.folders",)).load()
    registry = collect(h)
    assert list(registry.by_plugin) == ["folders", "late"]


def test_a_misspelled_hook_drops_only_that_plugin() -> None:
    import loom
    from loom.plugins import PluginHost
    from loom.registry import collect

    class Typo:
        @loom.hookimpl
        def register_nodez(self, register):  # not a hook
            raise AssertionError("never called")

    class Fine:
        @loom.hookimpl
        def register_samplers(self, register):
            register("fine_sampler", lambda *a, **k: None)

    host = PluginHost(entry_points=False, builtins=())
    host.register(Typo(), "typo")
    host.register(Fine(), "fine")
    host.load()
    assert [f.plugin for f in host.failures] == ["typo"]
    assert "register_nodez" in str(host.failures[0])
    assert "pluggy" not in str(host.failures[0])  # no location inside the plugin manager
    assert not host.pm.has_plugin("typo")
    assert "fine_sampler" in collect(host).samplers


def test_a_failing_plugin_is_one_readable_log_line_and_its_traceback_is_debug_only(caplog) -> None:
    import logging

    from loom.plugins import PluginHost

    host = PluginHost(entry_points=False, builtins=())
    with caplog.at_level(logging.DEBUG, logger="loom.plugins"):
        load_line = sys._getframe().f_lineno + 1
        host.load_plugin("broken", lambda: 1 / 0)
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in errors] == [
        "plugin 'broken' failed to load: ZeroDivisionError: division by zero "
        f"(at {__file__} line {load_line})"
    ]
    assert errors[0].exc_info is None
    assert any(r.exc_info for r in caplog.records if r.levelno == logging.DEBUG)
    assert [f.plugin for f in host.failures] == ["broken"] and host.failures[
        0
    ].__cause__ is not None
