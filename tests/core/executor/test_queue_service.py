"""The shared queue, history and worker (what `loom run` and `loom serve` both use)."""

from __future__ import annotations

import threading

import pytest
from executor_stub_nodes import StubNodes

import loom
from loom.errors import LoomError, PromptValidationError
from loom.executor.queue import HistoryEntry, InProcessQueue, QueueItem
from loom.executor.service import PromptService
from loom.settings import Settings
from loom.testing import make_runtime


def item(number, prompt_id, secret=False):
    extra = {"client_id": "c", **({"api_key_comfy_org": "s3cret"} if secret else {})}
    return QueueItem(number, prompt_id, {}, extra, ["1"])


def test_queue_orders_by_number_and_hides_secrets():
    queue = InProcessQueue()
    queue.put(item(5, "late"))
    queue.put(item(-1, "front"))
    queue.put(item(2, "mid", secret=True))
    assert queue.remaining() == 3
    assert [queue.get(0).prompt_id for _ in range(3)] == ["front", "mid", "late"]
    assert queue.get(timeout=0.01) is None
    assert queue.running()[1].as_list()[3] == {"client_id": "c"}


def test_queue_delete_clear_and_history_bounds():
    queue = InProcessQueue(max_history=3)
    for i in range(5):
        queue.put(item(i, f"p{i}"))
    queue.delete(["p1"])
    assert sorted(i.prompt_id for i in queue.pending()) == ["p0", "p2", "p3", "p4"]
    for _ in range(4):
        done = queue.get(0)
        queue.task_done(done, HistoryEntry(done, {}, {"status_str": "success"}, {}))
    assert list(queue.history()) == ["p2", "p3", "p4"]  # oldest dropped, oldest first
    assert list(queue.history(max_items=2)) == ["p3", "p4"]
    assert list(queue.history(max_items=1, offset=0)) == ["p2"]
    queue.delete_history(["p3"])
    assert queue.history_item("p3") is None
    queue.put(item(9, "x"))
    queue.clear()
    assert queue.remaining() == 0


class Recorder:
    def __init__(self):
        self.events = []
        self.done = threading.Event()

    @loom.hookimpl
    def on_execution_event(self, event):
        self.events.append(event)
        if event.type == "executing" and event.data.get("node") is None:
            self.done.set()


@pytest.fixture
def service(loom_runtime):
    recorder = Recorder()
    runtime = loom_runtime(builtins=False, stubs=StubNodes(), recorder=recorder)
    svc = PromptService(runtime)
    svc.recorder = recorder
    yield svc
    svc.stop()


def test_hook_make_prompt_queue_supplies_the_queue(loom_runtime):
    custom = InProcessQueue()

    class Backend:
        @loom.hookimpl
        def make_prompt_queue(self, settings):
            return custom

    runtime = loom_runtime(builtins=False, backend=Backend())
    assert runtime.queue is custom


def test_a_queue_url_no_plugin_understands_is_an_error_not_a_local_queue(loom_runtime):
    runtime = loom_runtime(builtins=False, settings={"queue_url": "foo://elsewhere/0"})
    with pytest.raises(LoomError, match="no loaded plugin understands the queue URL 'foo://"):
        _ = runtime.queue
    assert isinstance(loom_runtime(builtins=False).queue, InProcessQueue)  # none asked for


def test_worker_runs_prompts_writes_history_and_reports_done(service):
    service.start()
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": "4"}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    submitted = service.submit(
        prompt, client_id="abc", extra_data={"extra_pnginfo": {"workflow": {}}}
    )
    assert submitted.number == 0 and submitted.node_errors == {}
    assert service.recorder.done.wait(10)
    entry = service.queue.history_item(submitted.prompt_id)
    assert entry.status["status_str"] == "success" and entry.status["completed"]
    assert entry.outputs == {"2": {"text": ["4"]}}
    number, prompt_id, stored, extra, outputs = entry.item.as_list()
    assert (number, prompt_id, outputs) == (0, submitted.prompt_id, ["2"])
    assert stored["1"]["inputs"]["value"] == 4  # coerced copy
    assert extra["client_id"] == "abc" and "create_time" in extra
    kinds = [e.type for e in service.recorder.events]
    assert kinds.index("execution_success") < len(kinds) - 1 - kinds[::-1].index("status")
    assert kinds[-1] == "executing"
    assert all(e.client_id == "abc" for e in service.recorder.events if e.type not in ("status",))


def test_rejected_prompts_use_up_a_number(service):
    with pytest.raises(PromptValidationError):
        service.submit({"1": {"class_type": "Const", "inputs": {"value": 1}}})
    assert service.submit({"1": {"class_type": "Show", "inputs": {"value": 1}}}).number == 1
    assert (
        service.submit({"1": {"class_type": "Show", "inputs": {"value": 1}}}, front=True).number
        == -2
    )


def test_worker_survives_failures_and_serves_the_next_prompt(service):
    service.start()
    bad = {
        "1": {"class_type": "Const", "inputs": {"value": 1}},
        "2": {"class_type": "Boom", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    first = service.submit(bad)
    assert service.recorder.done.wait(10)
    service.recorder.done.clear()
    assert service.queue.history_item(first.prompt_id).status["status_str"] == "error"
    good = service.submit({"1": {"class_type": "Show", "inputs": {"value": 1}}})
    assert service.recorder.done.wait(10)
    assert service.queue.history_item(good.prompt_id).status["status_str"] == "success"


def test_numbers_come_from_the_queue_so_servers_sharing_it_agree(tmp_path):
    runtime = make_runtime(
        builtins=False,
        settings=Settings(base_directory=tmp_path, load_custom_nodes=False),
        stubs=StubNodes(),
    )
    first, second = PromptService(runtime), PromptService(runtime)
    show = {"1": {"class_type": "Show", "inputs": {"value": 1}}}
    assert [first.submit(show).number, second.submit(show).number] == [0, 1]
    assert runtime.queue.runs_in_process


def test_interrupt_reaches_only_the_prompt_it_names(service):
    interrupted = []
    service.runtime.executor.interrupt = lambda prompt_id=None: interrupted.append(prompt_id)
    service.interrupt("nothing-runs")
    assert interrupted == []  # nothing running: no flag left set for the next prompt
    service._current = QueueItem(0, "p", {}, {}, ["1"])  # as run_item sets it
    service.interrupt("other")
    assert interrupted == []
    service.interrupt("p")
    service.interrupt(None)
    # addressed to the running prompt, so it holds even if its run has not begun yet
    assert interrupted == ["p", "p"]
