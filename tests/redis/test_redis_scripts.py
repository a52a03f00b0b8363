"""The queue's transitions (take, renew, finish, hand back, dead-letter, delete, clear) on
fakeredis with Lua: two ``RedisQueue`` objects on one server act as two workers."""

from __future__ import annotations

import json

import pytest
from loom_redis.metrics import newest_dead_letters
from loom_redis.queue import RedisQueue, RedisQueueOptions

from loom.events import now_ms
from loom.executor.queue import HistoryEntry, QueueItem

SUCCESS = {"status_str": "success", "completed": True, "messages": []}


def item(prompt_id: str, number: float = 0, ckpt: str | None = None) -> QueueItem:
    inputs = {"ckpt_name": ckpt} if ckpt else {}
    prompt = {"1": {"class_type": "Loader", "inputs": inputs}}
    return QueueItem(number, prompt_id, prompt, {"client_id": "c", "create_time": now_ms()}, ["1"])


def done(queue: RedisQueue, got: QueueItem, outputs: dict | None = None) -> None:
    queue.task_done(got, HistoryEntry(got, outputs or {}, SUCCESS, {}))


@pytest.fixture
def make_queue(fake_client):
    made = []

    def build(**options) -> RedisQueue:
        queue = RedisQueue(fake_client, RedisQueueOptions(**options), consumer=f"w{len(made)}")
        made.append(queue)
        return queue

    yield build
    for queue in made:
        queue.close()


def test_prompts_run_in_number_order_front_first_and_ties_in_arrival_order(make_queue):
    queue = make_queue()
    for prompt_id, number in [("a", 3), ("b", 1), ("c", 1), ("front", -5)]:
        queue.put(item(prompt_id, number))
    queue.put(item("b", 0))  # a retried submission adds nothing
    assert [i.prompt_id for i in queue.pending()] == ["front", "b", "c", "a"]
    assert queue.remaining() == 4
    taken = []
    for _ in range(4):
        got = queue.get(timeout=0)
        taken.append(got.prompt_id)
        assert [i.prompt_id for i in queue.running()] == [got.prompt_id]
        done(queue, got)
    assert taken == ["front", "b", "c", "a"]
    assert queue.get(timeout=0) is None
    assert list(queue.history()) == taken
    assert queue.remaining() == 0 and queue.leases() == []


def test_expired_lease_is_taken_over_and_the_late_result_is_fenced(make_queue):
    first, second = make_queue(lease_s=60), make_queue(lease_s=0)
    first.put(item("p"))
    lost = first.get(timeout=0)
    taken = second.get(timeout=0)  # lease_s=0: every lease counts as expired for `second`
    assert taken.prompt_id == "p"
    (lease,) = second.leases()
    assert (lease["consumer"], lease["deliveries"]) == ("w1", 2)
    assert first.keeper.lease is not None  # the late worker: renewal and result are refused
    assert not first._script(
        "HEARTBEAT", [first.keys.stream], ["workers", "w0", first.keeper.lease.entry_id, 1]
    )
    done(first, lost, {"1": {"text": ["late"]}})
    assert first.history_item("p") is None and len(second.leases()) == 1
    done(second, taken, {"1": {"text": ["winner"]}})
    assert first.history_item("p").outputs == {"1": {"text": ["winner"]}}
    assert second.leases() == []


def test_a_prompt_delivered_too_often_goes_to_dead_letters_with_a_history_entry(make_queue):
    owner = make_queue()
    owner.put(item("poison"))
    owner.get(timeout=0)  # delivery 1, its worker then "dies"
    thieves = [make_queue(lease_s=0, max_deliveries=2) for _ in range(2)]
    assert thieves[0].get(timeout=0).prompt_id == "poison"  # delivery 2
    assert thieves[1].get(timeout=0) is None  # delivery 3 > 2: dead-lettered, not run
    (dead,) = newest_dead_letters(owner)
    assert dead["prompt_id"] == "poison" and dead["deliveries"] == "3"
    entry = owner.history_item("poison")
    assert entry.status["status_str"] == "error"
    assert "delivered 3 times" in entry.status["messages"][0][1]["exception_message"]
    assert owner.leases() == [] and owner.remaining() == 0


def test_a_handed_back_prompt_is_taken_at_once_without_counting_the_delivery(make_queue):
    leaving, staying = make_queue(), make_queue(lease_s=30)
    leaving.put(item("p"))
    got = leaving.get(timeout=0)
    assert leaving.hand_back("p")
    done(leaving, got)  # handed back: no history
    assert leaving.history_item("p") is None
    again = staying.get(timeout=0)
    assert again.prompt_id == "p" and staying.leases()[0]["deliveries"] == 1
    done(staying, again)
    assert staying.history_item("p").status == SUCCESS


def test_delete_and_clear_touch_only_pending_prompts(make_queue):
    queue = make_queue()
    for prompt_id in "abcd":
        queue.put(item(prompt_id))
    running = queue.get(timeout=0)
    queue.delete(["b", running.prompt_id])
    assert [i.prompt_id for i in queue.pending()] == ["c", "d"]
    queue.clear()
    assert queue.pending() == [] and [i.prompt_id for i in queue.running()] == ["a"]
    done(queue, running)
    assert list(queue.history()) == ["a"]


def test_history_is_bounded_sliced_like_comfyui_and_deletable(make_queue):
    queue = make_queue(max_history=3)
    for n in range(5):
        queue.put(item(f"p{n}", n))
        done(queue, queue.get(timeout=0))
    assert list(queue.history()) == ["p2", "p3", "p4"]
    assert list(queue.history(max_items=2)) == ["p3", "p4"]
    assert list(queue.history(max_items=1, offset=0)) == ["p2"]
    queue.delete_history(["p3"])
    assert queue.history_item("p3") is None and list(queue.history()) == ["p2", "p4"]
    queue.clear_history()
    assert queue.history() == {}


def test_an_idle_worker_leaves_a_prompt_to_the_idle_worker_holding_its_model(make_queue):
    holder, other = make_queue(prefer_loaded_s=3600), make_queue(prefer_loaded_s=3600)
    holder.keeper.remember_models(["big.safetensors"])
    holder.keeper.advertise()
    other.put(item("needs-big", 0, ckpt="big.safetensors"))
    other.put(item("plain", 1))
    assert other.get(timeout=0).prompt_id == "plain"  # skips the one `holder` should run
    assert holder.get(timeout=0).prompt_id == "needs-big"


def test_numbers_are_shared_by_every_server(make_queue):
    one, two = make_queue(), make_queue()
    assert [one.next_number(), two.next_number(), one.next_number()] == [0, 1, 2]


def test_leaving_workers_withdraw_and_silent_ones_are_pruned(make_queue, fake_client):
    leaving, silent, pruner = make_queue(), make_queue(lease_s=1), make_queue(lease_s=1)
    for queue in (leaving, silent, pruner):
        queue.put(item(f"from-{queue.consumer}"))
        done(queue, queue.get(timeout=0))
    consumers = {c["name"].decode() for c in fake_client.xinfo_consumers("loom:stream", "workers")}
    assert consumers == {"w0", "w1", "w2"}
    leaving.close()
    assert set(fake_client.hkeys("loom:workers")) == {b"w1", b"w2"}
    state = json.loads(fake_client.hget("loom:workers", "w1"))
    state["seen_ms"] -= 11_000  # silent for 11 leases of 1 s (as a SIGKILLed worker)
    fake_client.hset("loom:workers", "w1", json.dumps(state))
    pruner.keeper.prune()
    assert set(fake_client.hkeys("loom:workers")) == {b"w2"}
    consumers = {c["name"].decode() for c in fake_client.xinfo_consumers("loom:stream", "workers")}
    assert consumers == {"w2"}


def test_outputs_are_synced_only_inside_the_output_folder(tmp_path):
    from loom_redis.durable import output_files, sync_outputs

    (tmp_path / "out" / "sub").mkdir(parents=True)
    (tmp_path / "out" / "sub" / "a.png").write_bytes(b"png")
    outputs = {
        "9": {
            "images": [
                {"filename": "a.png", "subfolder": "sub", "type": "output"},
                {"filename": "p.png", "subfolder": "", "type": "temp"},
                {"filename": "x", "subfolder": "../..", "type": "output"},
            ],
            "text": ["not a file"],
        }
    }
    assert output_files(outputs, tmp_path / "out") == [(tmp_path / "out" / "sub" / "a.png")]
    sync_outputs(outputs, tmp_path / "out")  # a missing or foreign file is skipped, not fatal
