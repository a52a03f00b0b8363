"""The pub/sub bus: interrupts and execution events (previews included) reach listeners in
another queue object; a kind nobody listens to is not subscribed."""

from __future__ import annotations

import queue

from loom_redis.bus import Bus, Channels, EventPublisher
from redis_cluster import wait_for

from loom.events import ExecutionEvent, Preview


def test_events_and_interrupts_cross_between_processes_sharing_a_queue(fake_client):
    channels = Channels.under("loom")
    server, worker = Bus(fake_client, channels), Bus(fake_client, channels)
    received: queue.Queue = queue.Queue()
    server.listen("events", received.put)
    worker.listen("interrupts", lambda prompt_id: received.put(("interrupt", prompt_id)))
    worker.listen("changed", lambda: received.put("changed"))
    worker.ignore("changed")

    def subscribed() -> bool:
        counts = dict(
            fake_client.pubsub_numsub(channels.events, channels.interrupt, channels.changed)
        )
        return (
            counts[channels.events.encode()] == 1
            and counts[channels.interrupt.encode()] == 1
            and (counts[channels.changed.encode()] == 0)
        )

    try:
        wait_for("both subscriptions", subscribed, timeout_s=30)
        preview = Preview("JPEG", b"\xff\xd8jpeg", node_id="3", prompt_id="p")
        publisher = EventPublisher(worker)
        publisher.on_execution_event(ExecutionEvent("status", {"status": {}}))  # stays local
        publisher.on_execution_event(
            ExecutionEvent("progress", {"value": 1, "max": 2}, "alice", preview)
        )
        server.publish_changed()
        server.publish_interrupt(None)
        # two publishers (the worker's batching thread, the server): their messages may
        # arrive in either order; each arrives once, and "changed" is ignored
        arrived = [received.get(timeout=30), received.get(timeout=30)]
        progress = ExecutionEvent("progress", {"value": 1, "max": 2}, "alice", preview)
        assert progress in arrived and ("interrupt", None) in arrived
        server.publish_interrupt("p")
        assert received.get(timeout=30) == ("interrupt", "p")  # nothing else came between
    finally:
        server.close()
        worker.close()
