"""Execution semantics (comfy-compat.md section 8) with classic stub nodes."""

from __future__ import annotations

import sys

import loom
from loom.events import Preview
from loom.executor.executor import Executor
from loom.plugins import PluginHost
from loom.registry import collect


def run(executor, prompt, events=None):
    return executor.run_prompt(
        prompt, prompt_id="p1", on_event=(events.append if events is not None else None)
    )


IMAGE_GRAPH = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    "4": {
        "class_type": "SaveImage",
        "inputs": {"filename_prefix": "compat_test", "images": ["2", 0]},
    },
}


def test_events_follow_comfyui_order(executor):
    events = []
    result = run(executor, IMAGE_GRAPH, events)
    assert result.status_str == "success" and result.completed
    kinds = [(e.type, e.data.get("node")) for e in events]
    assert kinds[:2] == [("execution_start", None), ("execution_cached", None)]
    assert kinds[-1] == ("execution_success", None)
    executing = [node for kind, node in kinds if kind == "executing"]
    assert executing[:2] == ["1", "2"] and sorted(executing[2:]) == ["3", "4"]
    executed = {e.data["node"]: e.data["output"] for e in events if e.type == "executed"}
    assert executed["4"]["images"][0]["filename"] == "compat_test_00001_.png"
    assert set(result.outputs) == {"3", "4"}
    assert [m[0] for m in result.messages] == [
        "execution_start",
        "execution_cached",
        "execution_success",
    ]
    assert result.meta["4"] == {
        "node_id": "4",
        "display_node": "4",
        "parent_node": None,
        "real_node_id": "4",
    }


def test_fully_cached_rerun_reemits_outputs_without_executing(executor, calls):
    run(executor, IMAGE_GRAPH)
    calls.clear()
    events = []
    result = run(executor, IMAGE_GRAPH, events)
    assert calls == []
    cached = next(e for e in events if e.type == "execution_cached")
    assert cached.data["nodes"] == ["1", "2", "3", "4"]
    assert not [e for e in events if e.type == "executing"]
    assert {e.data["node"] for e in events if e.type == "executed"} == {"3", "4"}
    assert set(result.outputs) == {"3", "4"}


def test_changing_a_constant_reruns_only_downstream(executor, calls):
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 2}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
        "3": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": 10}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
    }
    run(executor, prompt)
    calls.clear()
    prompt["3"]["inputs"]["b"] = 20
    result = run(executor, prompt)
    assert calls == ["Add:3+20", "Show:23"]
    assert result.outputs["4"] == {"text": ["23"]}


def test_cache_is_content_keyed_across_node_ids(executor, calls):
    run(
        executor,
        {
            "1": {"class_type": "Const", "inputs": {"value": 5}},
            "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
        },
    )
    calls.clear()
    run(
        executor,
        {
            "10:1": {"class_type": "Const", "inputs": {"value": 5}},
            "10:2": {"class_type": "Show", "inputs": {"value": ["10:1", 0]}},
        },
    )
    assert calls == []


def test_is_changed(executor, calls):
    prompt = {
        "1": {"class_type": "Changing", "inputs": {"token": 2}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    run(executor, prompt)
    prompt["1"]["inputs"]["token"] = (
        3  # IS_CHANGED is token // 2: same fingerprint, new input -> reruns anyway
    )
    calls.clear()
    run(executor, prompt)
    assert "Changing:3" in calls
    calls.clear()
    run(executor, prompt)
    assert calls == []
    prompt["1"]["inputs"]["token"] = -1  # IS_CHANGED raises -> never cached
    run(executor, prompt)
    calls.clear()
    run(executor, prompt)
    assert calls == ["Changing:-1", "Show:-1"]


def test_lazy_inputs_skip_the_unused_branch(executor, calls):
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 1}},
        "2": {"class_type": "Const", "inputs": {"value": 2}},
        "3": {"class_type": "Switch", "inputs": {"use_a": False, "a": ["1", 0], "b": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
    }
    result = run(executor, prompt)
    assert result.outputs["4"] == {"text": ["2"]}
    assert "Const:1" not in calls and "Const:2" in calls


def test_list_mapping(executor):
    prompt = {
        "1": {"class_type": "MakeList", "inputs": {"count": 4}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 10}},
        "3": {"class_type": "SumList", "inputs": {"values": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
        "5": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    result = run(executor, prompt)
    assert result.outputs["4"] == {"text": ["46"]}  # 10+11+12+13
    assert result.outputs["5"] == {
        "text": ["10", "11", "12", "13"]
    }  # one call per element, UI merged
    assert result.values["2"] == ([10, 11, 12, 13],)


def test_node_expansion_runs_the_subgraph_in_place(executor):
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 21}},
        "2": {"class_type": "Doubler", "inputs": {"x": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    events = []
    result = run(executor, prompt, events)
    assert result.status_str == "success", result.error
    assert result.outputs["3"] == {"text": ["42"]}
    assert "2.0.0.2" in result.values
    assert [
        e.data["display_node"]
        for e in events
        if e.type == "executing" and e.data["node"] == "2.0.0.2"
    ] == ["2"]


def test_node_exception_becomes_execution_error_and_engine_stays_usable(executor):
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 3}},
        "2": {"class_type": "Boom", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    events = []
    result = run(executor, prompt, events)
    assert result.status_str == "error" and not result.completed
    error = result.error
    assert error["node_id"] == "2" and error["node_type"] == "Boom"
    assert error["exception_type"] == "ValueError" and error["exception_message"] == "boom on 3"
    assert any("raise ValueError" in line for line in error["traceback"])
    assert error["current_inputs"] == {"value": ["3"]}
    assert "1" in error["executed"]
    assert result.messages[-1][0] == "execution_error"
    assert not [e for e in events if e.type == "execution_success"]
    assert run(executor, IMAGE_GRAPH).status_str == "success"


def test_internal_executor_error_ends_the_prompt_not_the_executor(executor, monkeypatch):
    from loom.executor import prompt_run

    def broken(self, node_id, definition):
        raise RuntimeError("executor bug")

    monkeypatch.setattr(prompt_run.PromptRun, "_gather", broken)
    result = run(executor, IMAGE_GRAPH)
    assert result.status_str == "error" and result.error["exception_message"] == "executor bug"
    monkeypatch.undo()
    assert run(executor, IMAGE_GRAPH).status_str == "success"


def test_interrupt_stops_the_run_and_the_next_prompt_runs(executor):
    prompt = {"1": {"class_type": "SlowSteps", "inputs": {"steps": 5, "stop_at": 2}}}
    events = []
    result = run(executor, prompt, events)
    assert result.interrupted and result.status_str == "error" and not result.completed
    assert result.messages[-1][0] == "execution_interrupted"
    assert result.messages[-1][1]["node_id"] == "1"
    assert [e.data["value"] for e in events if e.type == "progress"] == [1]
    prompt["1"]["inputs"]["stop_at"] = 0
    assert run(executor, prompt).status_str == "success"


def test_an_interrupt_for_a_prompt_not_yet_begun_stops_it_a_stale_one_does_not(executor):
    """The queue reports a prompt running before its run begins: an interrupt addressed to
    it in that window must still stop it, while an unaddressed one left over from an
    earlier run must not stop the next prompt."""
    prompt = {"1": {"class_type": "SlowSteps", "inputs": {"steps": 3, "stop_at": 0}}}
    executor.interrupt("p1")  # run() below uses prompt id p1
    assert run(executor, prompt).interrupted
    executor.interrupt("another-prompt")
    assert run(executor, prompt).status_str == "success"
    executor.interrupt()
    assert run(executor, prompt).status_str == "success"


def test_execution_blocker(executor, calls):
    silent = {
        "1": {"class_type": "Const", "inputs": {"value": 1}},
        "2": {"class_type": "Block", "inputs": {"value": ["1", 0], "message": ""}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    result = run(executor, silent)
    assert result.status_str == "success" and "3" not in result.outputs and "4" in result.outputs
    loud = {**silent, "2": {"class_type": "Block", "inputs": {"value": ["1", 0], "message": "no"}}}
    events = []
    result = run(Executor(registry=executor.registry), loud, events)
    blocked = [e.data for e in events if e.type == "execution_error"]
    assert blocked and blocked[0]["exception_type"] == "ExecutionBlocked"
    assert blocked[0]["exception_message"] == "Execution Blocked: no"
    assert result.status_str == "success"


def test_ten_thousand_deep_chain_runs_and_requeues_from_cache(executor):
    n = 10_000
    prompt = {"0": {"class_type": "Const", "inputs": {"value": 0}}}
    for i in range(1, n):
        prompt[str(i)] = {"class_type": "Add", "inputs": {"a": [str(i - 1), 0], "b": 1}}
    prompt["out"] = {"class_type": "Show", "inputs": {"value": [str(n - 1), 0]}}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(300)
    try:
        assert run(executor, prompt).outputs["out"] == {"text": [str(n - 1)]}
        assert run(executor, prompt).outputs["out"] == {"text": [str(n - 1)]}
    finally:
        sys.setrecursionlimit(limit)


def test_cache_policies(registry, calls):
    from loom.executor.cache import OutputCache

    prompt_a = {
        "1": {"class_type": "Const", "inputs": {"value": 1}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    prompt_b = {
        "1": {"class_type": "Const", "inputs": {"value": 2}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }

    def reruns(policy, size=100):
        executor = Executor(registry=registry)
        executor.cache = OutputCache(policy, size)
        run(executor, prompt_a)
        run(executor, prompt_b)
        calls.clear()
        run(executor, prompt_a)
        return list(calls)

    assert reruns("classic") == ["Const:1", "Show:1"]  # switching workflows evicts
    assert reruns("lru", 10) == []
    assert reruns("lru", 2) == ["Const:1", "Show:1"]
    assert reruns("none") == ["Const:1", "Show:1"]
    assert reruns("ram") == []


@loom.node("Previewer", category="testing", output_node=True)
class Previewer:
    """Reports one step with a preview that knows nothing about its node."""

    def run(self, ctx: loom.RunContext) -> None:
        ctx.progress(1, 1, Preview("JPEG", b"\xff\xd8"))


def test_progress_previews_are_labelled_with_the_node_by_the_executor():
    class Plugin:
        @loom.hookimpl
        def register_nodes(self, register):
            register(Previewer)

    host = PluginHost(entry_points=False, builtins=())
    host.register(Plugin(), "p")
    host.load()
    registry = collect(host)
    assert not registry.failures
    events = []
    Executor(registry=registry).run_prompt(
        {"7": {"class_type": "Previewer", "inputs": {}}}, prompt_id="pp", on_event=events.append
    )
    (progress,) = [e for e in events if e.type == "progress"]
    preview = progress.preview
    assert (preview.node_id, preview.prompt_id, preview.display_node_id, preview.real_node_id) == (
        "7",
        "pp",
        "7",
        "7",
    )
    assert preview.parent_node_id is None and preview.data == b"\xff\xd8"


class LinkBack:
    """Expands into an Add whose input links to ``target``: a loop when target needs us."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"x": ("INT", {"forceInput": True}), "target": ("STRING", {})},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, x, target, unique_id):
        graph = {f"{unique_id}.1": {"class_type": "Add", "inputs": {"a": [target, 0], "b": x}}}
        return {"result": ([f"{unique_id}.1", 0],), "expand": graph}


def test_a_cycle_made_at_run_time_names_its_nodes_and_the_executor_stays_usable():
    from executor_stub_nodes import StubNodes

    class Plugin:
        @loom.hookimpl
        def register_nodes(self, register):
            register(LinkBack, class_type="LinkBack")

    host = PluginHost(entry_points=False, builtins=())
    host.register(StubNodes(), "stubs")
    host.register(Plugin(), "p")
    host.load()
    executor = Executor(registry=collect(host))
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 1}},
        "2": {"class_type": "LinkBack", "inputs": {"x": ["1", 0], "target": "3"}},
        "3": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": 1}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
    }
    result = run(executor, prompt)
    assert result.status_str == "error"
    message, hint = result.error["exception_message"].splitlines()
    assert hint.startswith("hint: a node's expansion or lazy input links back")
    assert message == (
        "dependency cycle: node 2 (LinkBack) waits for 2.1 (Add); "
        "node 3 (Add) waits for 2 (LinkBack); node 2.1 (Add) waits for 3 (Add), "
        "so none of them can run"
    )
    assert result.error["exception_type"].endswith("DependencyCycleError")
    assert (result.error["node_id"], result.error["node_type"]) == ("2", "LinkBack")
    assert run(executor, IMAGE_GRAPH).status_str == "success"


def test_a_failing_node_raises_node_execution_error_inside_the_run(executor, monkeypatch):
    """The run raises the exported NodeExecutionError, which the executor reports."""
    from loom.executor import prompt_run

    seen = []
    original = prompt_run.PromptRun.run

    def spy(self):
        try:
            original(self)
        except loom.NodeExecutionError as exc:
            seen.append(exc)
            raise

    monkeypatch.setattr(prompt_run.PromptRun, "run", spy)
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 3}},
        "2": {"class_type": "Boom", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    result = run(executor, prompt)
    (error,) = seen
    assert (error.node_id, error.class_type, error.inputs) == ("2", "Boom", {"value": [3]})
    assert isinstance(error.cause, ValueError) and error.__cause__ is error.cause
    assert str(error) == "node 2 (Boom) failed: ValueError: boom on 3"
    assert result.error["exception_message"] == "boom on 3"
