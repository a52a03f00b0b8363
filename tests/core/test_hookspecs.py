"""One ``test_hook_<name>`` per hookspec, plus meta-tests that keep hooks tested and documented."""

from __future__ import annotations

import inspect
import logging
import re
import types
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
from loom.samplers import find_sampler, find_scheduler
from loom.settings import Settings
from loom.types import SamplerInfo

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

    def dpm_2_like(model, x, sigmas, **kwargs):
        return x

    class Plugin:
        @loom.hookimpl
        def register_samplers(self, register):
            register("euler_test", euler_like)
            register("dpm_2_test", dpm_2_like, SamplerInfo(discard_penultimate_sigma=True))

    registry = collect(make_host(Plugin()))

    assert registry.sampler_names() == ["euler_test", "dpm_2_test"]
    euler = find_sampler(registry, "euler_test")
    assert euler.function is euler_like and euler.info == SamplerInfo()
    dpm_2 = find_sampler(registry, "dpm_2_test")
    assert dpm_2.function is dpm_2_like and dpm_2.info.discard_penultimate_sigma
    with pytest.raises(loom.LoomError, match="unknown sampler 'nope'") as raised:
        find_sampler(registry, "nope")
    assert "euler_test, dpm_2_test" in str(raised.value)


def test_hook_register_schedulers() -> None:
    def linear(model_sampling, steps):
        return [float(steps - i) for i in range(steps + 1)]

    class Plugin:
        @loom.hookimpl
        def register_schedulers(self, register):
            register("linear_test", linear)

    registry = collect(make_host(Plugin()))

    assert find_scheduler(registry, "linear_test") is linear
    assert registry.scheduler_names() == ["linear_test"]
    with pytest.raises(loom.LoomError, match="unknown scheduler 'nope'"):
        find_scheduler(registry, "nope")


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


# --- every hook goes through pluggy -----------------------------------------------------


class EveryHook:
    """Implements every hookspec, declining or registering nothing."""

    @loom.hookimpl
    def register_nodes(self, register):
        register(HookTestInvert)

    @loom.hookimpl
    def register_model_folders(self, register):
        pass

    @loom.hookimpl
    def register_model_families(self, register):
        pass

    @loom.hookimpl
    def register_samplers(self, register):
        pass

    @loom.hookimpl
    def register_schedulers(self, register):
        pass

    @loom.hookimpl
    def register_weight_adapters(self, register):
        pass

    @loom.hookimpl
    def register_commands(self, cli):
        pass

    @loom.hookimpl
    def adapter_key_map(self, model, kind):
        return None

    @loom.hookimpl
    def on_execution_event(self, event):
        pass

    @loom.hookimpl
    def make_prompt_queue(self, settings):
        return None

    @loom.hookimpl
    def compile_node(self, node_class, class_type, display_name, python_module):
        return None

    @loom.hookimpl
    def custom_node_entrypoint(self, module, name):
        return None

    @loom.hookimpl
    def prepare_runtime(self, runtime):
        pass

    @loom.hookimpl
    def plugin_notes(self, plugin_name):
        return None

    @loom.hookimpl
    def node_problems(self, node_id, prompt, env):
        return None

    @loom.hookimpl
    def web_server_started(self, server):
        pass

    @loom.hookimpl
    def web_server_stopped(self, server):
        pass


class ForeignNode:
    """A node class in no style core knows: the ``compile_node`` hook is asked for it."""


def test_tracing_sees_every_hook_as_core_calls_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from loom.cli.main import add_plugin_commands

    monkeypatch.setenv("LOOM_TRACE_HOOKS", "1")
    runtime = make_runtime(tmp_path, EveryHook())
    with caplog.at_level(logging.DEBUG, logger="loom.plugins"):
        assert "HookTestInvert" in runtime.registry.nodes
        runtime.emit(ExecutionEvent("status", {}))
        assert runtime.queue is not None
        add_plugin_commands(runtime.host, click.Group("loom"))
        assert runtime.host.hook.adapter_key_map(model=object(), kind="model") is None
        # a class in no known style goes to compile_node (declined here: a registration error)
        registry = runtime.registry
        with pytest.raises(loom.NodeDefinitionError, match="no installed plugin compiles"):
            registry.add_node("test_plugin_0", ForeignNode, class_type="ForeignNode")
        hook = runtime.host.hook
        assert hook.custom_node_entrypoint(module=types.ModuleType("pack"), name="pack") is None
        assert hook.plugin_notes(plugin_name="test_plugin_0") == []
        hook.web_server_started(server=object())
        hook.web_server_stopped(server=object())
        prompt = {"1": {"class_type": "HookTestInvert", "inputs": {}}}
        assert hook.node_problems(node_id="1", prompt=prompt, env=runtime.environment) == []
    traced = {
        match.group(1)
        for record in caplog.records
        if (match := re.match(r"hook (\w+) -> \['test_plugin_0'\]", record.getMessage()))
    }
    assert traced == set(HOOKS)


def test_registration_hooks_honour_tryfirst_and_trylast() -> None:
    def sampler_plugin(**marks: bool) -> object:
        class Plugin:
            @loom.hookimpl(**marks)
            def register_samplers(self, register):
                register("shared", object())

        return Plugin()

    host = make_host(sampler_plugin(trylast=True), sampler_plugin(), sampler_plugin(tryfirst=True))
    registry = collect(host)
    assert registry.owner[("sampler", "shared")] == "test_plugin_2"
    assert [str(e) for e in registry.failures] == [
        "sampler 'shared' registered by plugin 'test_plugin_1' is already registered by plugin 'test_plugin_2'",
        "sampler 'shared' registered by plugin 'test_plugin_0' is already registered by plugin 'test_plugin_2'",
    ]


def test_a_wrapper_wraps_each_plugins_registration_with_its_register() -> None:
    class Registers:
        def __init__(self, name: str) -> None:
            self.name = name

        @loom.hookimpl
        def register_schedulers(self, register):
            register(self.name, object())

    class AddsOneEach:
        @loom.hookimpl(wrapper=True)
        def register_schedulers(self, register):
            result = yield
            register(f"extra_{len(wrapped)}", object())
            wrapped.append(result)
            return result

    wrapped: list[Any] = []
    registry = collect(make_host(Registers("a"), AddsOneEach(), Registers("b")))
    assert len(wrapped) == 2
    assert registry.owner[("scheduler", "extra_0")] == "test_plugin_0"
    assert registry.owner[("scheduler", "extra_1")] == "test_plugin_2"


def test_hook_on_execution_event_reaches_plugins_registered_later(tmp_path: Path) -> None:
    seen: list[str] = []

    class Observer:
        def __init__(self, tag: str) -> None:
            self.tag = tag

        @loom.hookimpl
        def on_execution_event(self, event):
            seen.append(self.tag)

    runtime = make_runtime(tmp_path, Observer("a"), Observer("b"))
    runtime.emit(ExecutionEvent("status", {}))
    runtime.host.unregister("test_plugin_1")
    runtime.host.register(Observer("c"), "test_plugin_1")
    runtime.emit(ExecutionEvent("status", {}))
    assert seen == ["a", "b", "a", "c"]


def test_hook_node_problems(tmp_path: Path) -> None:
    from loom.executor.validate import PromptValidationError, validate_prompt

    @loom.node("NeedsFile", category="test", output_node=True)
    class NeedsFile:
        name: str = loom.ui.string("")

        def run(self, ctx: loom.RunContext) -> None:
            return None

    seen: list[tuple[str, str]] = []

    class Checker:
        @loom.hookimpl
        def register_nodes(self, register):
            register(NeedsFile)

        @loom.hookimpl
        def node_problems(self, node_id, prompt, env):
            seen.append((node_id, prompt[node_id]["class_type"]))
            name = prompt[node_id]["inputs"].get("name")
            assert env.folders is not None and env.registry is not None
            return [f"{name} is missing"] if name else None

    runtime = make_runtime(tmp_path, Checker())
    prompt = {"1": {"class_type": "NeedsFile", "inputs": {"name": "x.bin"}}}
    with pytest.raises(PromptValidationError) as info:
        validate_prompt(prompt, runtime.registry, env=runtime.environment)
    (error,) = info.value.node_errors["1"]["errors"]
    assert error["type"] == "missing_resource"
    assert error["details"] == "x.bin is missing"
    ok = {"1": {"class_type": "NeedsFile", "inputs": {"name": ""}}}
    assert validate_prompt(ok, runtime.registry, env=runtime.environment).outputs == ["1"]
    assert seen == [("1", "NeedsFile"), ("1", "NeedsFile")]
