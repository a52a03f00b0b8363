"""One ``test_hook_<name>`` per hookspec, plus meta-tests that keep hooks tested and documented."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

import loom
from loom import hookspecs, testing
from loom.events import ExecutionEvent
from loom.folders import FolderKind
from loom.plugins import PluginHost
from loom.registry import collect
from loom.runtime import Runtime
from loom.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def _named(plugins: tuple[object, ...]) -> dict[str, object]:
    return {f"test_plugin_{index}": plugin for index, plugin in enumerate(plugins)}


def make_host(*plugins: object) -> PluginHost:
    """A host with no built-ins and no entry-point scan, holding only ``plugins``."""
    return testing.make_host(builtins=False, **_named(plugins))


def make_runtime(tmp_path: Path, *plugins: object) -> Runtime:
    settings = testing.make_settings(tmp_path)
    return testing.make_runtime(settings=settings, builtins=False, **_named(plugins))


# --- one test per hook --------------------------------------------------------------------


@loom.node("HookTestInvert", category="test", display_name="Invert (hook test)")
class HookTestInvert:
    """Invert an image."""

    image: loom.types.Image

    def run(self, ctx: loom.RunContext) -> loom.types.Image:
        return 1.0 - self.image


class ClassicHookTestNode:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"text": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "go"

    def go(self, text: str) -> tuple[str]:
        return (text,)


def test_hook_register_nodes() -> None:
    class Plugin:
        @loom.hookimpl
        def register_nodes(self, register):
            register(HookTestInvert)
            register(ClassicHookTestNode, class_type="ClassicHookTest", display_name="Classic")

    registry = collect(make_host(Plugin()))

    assert registry.nodes["HookTestInvert"].display_name == "Invert (hook test)"
    assert registry.nodes["ClassicHookTest"].display_name == "Classic"
    assert registry.by_plugin["test_plugin_0"]["node"] == ["HookTestInvert", "ClassicHookTest"]
    assert not registry.failures


def test_hook_register_nodes_rejects_a_bad_declaration() -> None:
    class NotANode:
        pass

    class Plugin:
        @loom.hookimpl
        def register_nodes(self, register):
            register(NotANode)
            register(ClassicHookTestNode)  # classic without class_type
            register(HookTestInvert)

    registry = collect(make_host(Plugin()))

    assert list(registry.nodes) == ["HookTestInvert"]
    assert len(registry.failures) == 2
    assert all(isinstance(f, loom.NodeDefinitionError) for f in registry.failures)


def test_hook_register_model_folders() -> None:
    class Plugin:
        @loom.hookimpl
        def register_model_folders(self, register):
            register(FolderKind("upscalers_x", ("upscalers_x",), frozenset({".pth"})))

    class Other:
        @loom.hookimpl
        def register_model_folders(self, register):
            register(FolderKind("upscalers_x", ("more_upscalers",), frozenset({".safetensors"})))

    registry = collect(make_host(Plugin(), Other()))

    kind = registry.folder_kinds["upscalers_x"]
    assert set(kind.subdirs) == {"upscalers_x", "more_upscalers"}  # declaring twice merges
    assert kind.extensions == {".pth", ".safetensors"}
    assert not registry.failures


class TinyFamily:
    name = "tinyfamily"

    def detect(self, header: Any, part: str) -> float:
        return 0.0


def test_hook_register_model_families() -> None:
    class Plugin:
        @loom.hookimpl
        def register_model_families(self, register):
            register(TinyFamily())

    registry = collect(make_host(Plugin(), Plugin()))

    assert isinstance(registry.families["tinyfamily"], TinyFamily)
    [duplicate] = registry.failures
    assert isinstance(duplicate, loom.DuplicateRegistrationError)


def test_hook_register_samplers() -> None:
    def euler_like(model, x, sigmas, **kwargs):
        return x

    class Plugin:
        @loom.hookimpl
        def register_samplers(self, register):
            register("euler_test", euler_like)

    registry = collect(make_host(Plugin()))

    assert registry.samplers["euler_test"] is euler_like
    assert "euler_test" in registry.sampler_names()


def test_hook_register_schedulers() -> None:
    def linear(model_sampling, steps):
        return [float(steps - i) for i in range(steps + 1)]

    class Plugin:
        @loom.hookimpl
        def register_schedulers(self, register):
            register("linear_test", linear)

    registry = collect(make_host(Plugin()))

    assert registry.schedulers["linear_test"] is linear
    assert registry.scheduler_names() == ["linear_test"]


def test_hook_register_weight_adapters() -> None:
    class Adapter:
        name = "test_adapter"

        def claims(self, keys):
            return any(key.endswith(".test_down") for key in keys)

    class Plugin:
        @loom.hookimpl
        def register_weight_adapters(self, register):
            register(Adapter())

    registry = collect(make_host(Plugin()))

    assert registry.weight_adapters["test_adapter"].claims({"a.test_down"})
    assert registry.owner[("weight_adapter", "test_adapter")] == "test_plugin_0"


def test_hook_register_commands() -> None:
    class Plugin:
        @loom.hookimpl
        def register_commands(self, cli):
            @cli.command(name="hello-test")
            @click.argument("name")
            def hello(name):
                click.echo(f"hello {name}")

    cli = click.Group("loom")
    make_host(Plugin()).hook.register_commands(cli=cli)

    assert "hello-test" in cli.commands
    result = CliRunner().invoke(cli, ["hello-test", "loom"])
    assert result.exit_code == 0, result.output
    assert result.output == "hello loom\n"


def test_hook_on_execution_event(tmp_path: Path) -> None:
    seen: list[ExecutionEvent] = []

    class Observer:
        @loom.hookimpl
        def on_execution_event(self, event):
            seen.append(event)

    runtime = make_runtime(tmp_path, Observer())
    event = ExecutionEvent("executing", {"node": "3", "prompt_id": "p1"}, client_id="c1")
    runtime.emit(event)

    assert seen == [event]


def test_hook_on_execution_event_raising_observer_does_not_break_emit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Raising:
        @loom.hookimpl
        def on_execution_event(self, event):
            raise RuntimeError("observer bug")

    runtime = make_runtime(tmp_path, Raising())
    runtime.emit(ExecutionEvent("status", {"status": {"exec_info": {"queue_remaining": 0}}}))

    assert "on_execution_event" in caplog.text


def test_hook_on_execution_event_other_observers_still_receive(tmp_path: Path) -> None:
    seen: list[str] = []

    class Good:
        @loom.hookimpl
        def on_execution_event(self, event):
            seen.append(event.type)

    class Raising:
        @loom.hookimpl
        def on_execution_event(self, event):
            raise RuntimeError("observer bug")

    runtime = make_runtime(tmp_path, Good(), Raising())
    runtime.emit(ExecutionEvent("execution_start", {"prompt_id": "p1"}))

    assert seen == ["execution_start"]


class FakeQueue:
    """Stands in for a plugin-supplied PromptQueue."""


def test_hook_make_prompt_queue() -> None:
    queue = FakeQueue()

    class Declines:
        @loom.hookimpl
        def make_prompt_queue(self, settings):
            return None

    class Supplies:
        @loom.hookimpl
        def make_prompt_queue(self, settings):
            assert isinstance(settings, Settings)
            return queue

    host = make_host(Supplies(), Declines())
    assert host.hook.make_prompt_queue(settings=Settings()) is queue  # first non-None wins
    assert make_host(Declines()).hook.make_prompt_queue(settings=Settings()) is None


def test_runtime_queue_uses_plugin_queue(tmp_path: Path) -> None:
    pytest.importorskip("loom.executor.queue")
    queue = FakeQueue()

    class Supplies:
        @loom.hookimpl
        def make_prompt_queue(self, settings):
            return queue

    assert make_runtime(tmp_path, Supplies()).queue is queue


def test_runtime_queue_defaults_to_in_process(tmp_path: Path) -> None:
    module = pytest.importorskip("loom.executor.queue")
    assert isinstance(make_runtime(tmp_path).queue, module.InProcessQueue)


# --- meta-tests (datasette's test_plugin_hooks_have_tests / _are_documented) ---------------


HOOKS = hookspecs.all_hook_names()


def test_hook_names_found() -> None:
    assert "register_nodes" in HOOKS and "on_execution_event" in HOOKS
    assert len(HOOKS) == len(set(HOOKS))


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_has_docstring_with_params(name: str) -> None:
    spec = getattr(hookspecs, name)
    doc = inspect.getdoc(spec) or ""
    assert doc, f"hookspec {name} has no docstring"
    for param in inspect.signature(spec).parameters:
        assert f":param {param}:" in doc, f"hookspec {name} does not document :param {param}:"


def _readme_plugin_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Writing a plugin\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## Writing a plugin' section"
    return match.group(1)


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented_in_readme(name: str) -> None:
    section = _readme_plugin_section()
    params = list(inspect.signature(getattr(hookspecs, name)).parameters)
    lines = [line for line in section.splitlines() if f"{name}(" in line]
    assert lines, f"README.md's plugin section does not list hook {name}"
    assert any(all(param in line for param in params) for line in lines), (
        f"README.md lists hook {name} without its arguments {params}"
    )


def _hook_test_names() -> set[str]:
    names: set[str] = set()
    for path in (REPO / "tests").rglob("test_*.py"):
        names.update(
            re.findall(
                r"^\s*(?:async\s+)?def (test_hook_\w+)",
                path.read_text(encoding="utf-8"),
                re.MULTILINE,
            )
        )
    return names


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_test(name: str) -> None:
    tests = _hook_test_names()
    assert any(t == f"test_hook_{name}" or t.startswith(f"test_hook_{name}_") for t in tests), (
        f"no test_hook_{name} under tests/"
    )


def test_hook_adapter_key_map() -> None:
    from loom.types import AdapterKeyMap

    class Unet:
        def clone(self) -> Unet:
            return Unet()

    class Declines:
        @loom.hookimpl
        def adapter_key_map(self, model, kind):
            return None

    class Family:
        @loom.hookimpl
        def adapter_key_map(self, model, kind):
            if kind != "model" or not isinstance(model, Unet):
                return None
            return AdapterKeyMap(model, {"lora_unet_conv_in": "conv_in.weight"})

    host = make_host(Declines(), Family())
    value = Unet()
    answer = host.hook.adapter_key_map(model=value, kind="model")  # first non-None wins
    assert isinstance(answer, AdapterKeyMap) and answer.handle is value
    assert answer.keys == {"lora_unet_conv_in": "conv_in.weight"}
    assert host.hook.adapter_key_map(model=value, kind="clip") is None
    assert host.hook.adapter_key_map(model=object(), kind="model") is None
