"""loom.testing: the fixtures plugin authors build hosts and run prompts with."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import loom
from loom.errors import PromptValidationError
from loom.testing import HarnessError, make_host, make_registry

pytest_plugins = ["pytester"]


@loom.node("HarnessConst", category="test")
class HarnessConst:
    """Returns its value."""

    value: int = loom.ui.int(1)

    def run(self, ctx: loom.RunContext) -> int:
        return self.value


@loom.node("HarnessDouble", category="test")
class HarnessDouble:
    """Doubles its input; 13 is unlucky."""

    value: int

    def run(self, ctx: loom.RunContext) -> int:
        if self.value == 13:
            raise ValueError("13 is unlucky")
        return self.value * 2


@loom.node("HarnessShow", category="test", output_node=True)
class HarnessShow:
    """An output node showing its input as UI text."""

    value: int

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        return loom.NodeOutput(ui={"text": [str(self.value)]})


class HarnessNodes:
    @loom.hookimpl
    def register_nodes(self, register):
        register(HarnessConst)
        register(HarnessDouble)
        register(HarnessShow)


PROMPT = {
    "1": {"class_type": "HarnessConst", "inputs": {"value": 4}},
    "2": {"class_type": "HarnessDouble", "inputs": {"value": ["1", 0]}},
    "3": {"class_type": "HarnessShow", "inputs": {"value": ["2", 0]}},
}


@pytest.fixture
def fake_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An installed-looking distribution (real dist-info on sys.path) whose ``loom`` entry
    point ``harness_ep`` names a module registering the harness nodes."""
    module = f"loomtest_harness_{abs(hash(tmp_path))}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(f"""
            import loom
            from {__name__} import HarnessConst

            @loom.hookimpl
            def register_nodes(register):
                register(HarnessConst)
        """)
    )
    info = tmp_path / "loomtest_harness-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: loomtest-harness\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[loom]\nharness_ep = {module}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield module
    sys.modules.pop(module, None)


def test_host_holds_builtins_then_exactly_the_given_plugins(loom_host) -> None:
    host = loom_host(stubs=HarnessNodes())
    names = [info.name for info in host.infos]
    assert names[-1] == "stubs"
    assert all(info.builtin for info in host.infos[:-1]) and "folders" in names
    # no entry-point scan: installed plugins (loom-sd15, loom-http, ...) are not loaded
    assert not any(info.module.startswith("loom_") for info in host.infos)


def test_host_without_builtins_and_plugin_named_after_its_class(loom_host) -> None:
    host = loom_host(HarnessNodes(), builtins=False)
    assert [(info.name, info.builtin) for info in host.infos] == [("HarnessNodes", False)]


def test_entry_point_name_loads_that_plugin_with_its_version(loom_host, fake_distribution) -> None:
    host = loom_host("harness_ep", builtins=False)
    [info] = host.infos
    assert (info.name, info.module, info.version) == ("harness_ep", fake_distribution, "0.3")


def test_module_path_gets_its_entry_point_name(loom_registry, fake_distribution) -> None:
    registry = loom_registry(fake_distribution, builtins=False)
    assert registry.owner[("node", "HarnessConst")] == "harness_ep"


def test_unknown_entry_point_names_what_is_installed(fake_distribution) -> None:
    with pytest.raises(HarnessError, match=r"no plugin named .nope.*harness_ep"):
        make_host("nope", builtins=False)


def test_a_misspelled_hook_fails_strict_hosts_and_is_dropped_otherwise() -> None:
    class Typo:
        @loom.hookimpl
        def register_nodez(self, register):
            raise AssertionError("never called")

    with pytest.raises(HarnessError, match="register_nodez"):
        make_host(typo=Typo(), builtins=False)
    host = make_host(typo=Typo(), fine=HarnessNodes(), builtins=False, strict=False)
    assert [failure.plugin for failure in host.failures] == ["typo"]
    assert not host.pm.has_plugin("typo") and host.pm.has_plugin("fine")


def test_duplicate_registration_fails_a_strict_registry() -> None:
    with pytest.raises(HarnessError, match="HarnessConst"):
        make_registry(a=HarnessNodes(), b=HarnessNodes(), builtins=False)


def test_host_ignores_the_callers_plugin_selection(monkeypatch, loom_host) -> None:
    monkeypatch.setenv("LOOM_DISABLE_PLUGINS", "folders,stubs")
    monkeypatch.setenv("LOOM_PLUGINS", "nothing")
    host = loom_host(stubs=HarnessNodes())
    assert {"folders", "stubs"} <= {info.name for info in host.infos}
    assert host.pm.has_plugin("stubs")


def test_runtime_lives_in_tmp_path(loom_runtime, tmp_path) -> None:
    runtime = loom_runtime(stubs=HarnessNodes(), settings={"cache_size": 7})
    assert runtime.settings.base_directory == tmp_path
    assert runtime.settings.cache_size == 7 and not runtime.settings.load_custom_nodes
    assert "HarnessShow" in runtime.registry.nodes


def test_run_returns_history_events_and_values(loom_runtime, loom_run) -> None:
    runtime = loom_runtime(stubs=HarnessNodes(), builtins=False)
    record = loom_run(runtime, PROMPT, prompt_id="p1", client_id="me")
    assert record.ok and record.error is None
    assert record.outputs == {"3": {"text": ["8"]}}
    assert record.history["prompt"][1] == "p1" and record.history["prompt"][4] == ["3"]
    assert record.history["status"]["status_str"] == "success"
    assert record.value("2") == 8
    types = record.event_types
    assert types[0] == "execution_start" and types[-1] == "execution_success"
    assert types.index("executed") < types.index("execution_success")
    assert {event.client_id for event in record.events} == {"me"}

    again = loom_run(runtime, PROMPT, prompt_id="p2")
    cached = [e for e in again.events if e.type == "execution_cached"]
    assert cached and set(cached[0].data["nodes"]) == {"1", "2", "3"}


def test_a_failing_node_is_a_record_not_an_exception(loom_runtime, loom_run) -> None:
    runtime = loom_runtime(stubs=HarnessNodes(), builtins=False)
    prompt = {**PROMPT, "1": {"class_type": "HarnessConst", "inputs": {"value": 13}}}
    record = loom_run(runtime, prompt)
    assert not record.ok
    assert record.error["node_id"] == "2"
    assert "13 is unlucky" in record.error["exception_message"]
    assert record.event_types[-1] == "execution_error"
    with pytest.raises(KeyError, match="'3'"):
        record.value("3")


def test_an_invalid_prompt_raises_as_post_prompt_answers_400(loom_runtime, loom_run) -> None:
    runtime = loom_runtime(stubs=HarnessNodes(), builtins=False)
    with pytest.raises(PromptValidationError):
        loom_run(runtime, {"1": {"class_type": "NoSuchNode", "inputs": {}}})


def test_the_fixtures_come_from_the_installed_pytest11_entry_point(pytester) -> None:
    pytester.makepyfile(
        """
        def test_uses_loom_host(loom_host):
            assert loom_host(builtins=False).infos == []
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    disabled = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:loom")
    disabled.assert_outcomes(errors=1)
    disabled.stdout.fnmatch_lines(["*fixture 'loom_host' not found*"])


def test_the_pytest_plugin_imports_nothing_until_a_fixture_is_used() -> None:
    """Beyond ``import loom`` (which pytest pays for in every project that has loom-core),
    loading the plugin imports only loom.testing itself: no torch, no plugin host."""
    probe = (
        "import sys, pytest, loom; before = set(sys.modules); "
        "import loom.testing.pytest_plugin; "
        "new = sorted(m for m in set(sys.modules) - before "
        "if m == 'torch' or (m.startswith('loom.') and not m.startswith('loom.testing'))); "
        "print(new, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[] False"
