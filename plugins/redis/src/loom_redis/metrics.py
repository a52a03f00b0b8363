"""One snapshot of a shared queue: depth, leases, workers and dead letters (what
``loom queue status`` prints and what a server exposes as metrics)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from loom.frontend import QueueMetrics, WorkerState

if TYPE_CHECKING:
    from loom_redis.queue import RedisQueue


def newest_dead_letters(queue: RedisQueue, count: int = 100) -> list[dict[str, Any]]:
    """The newest dead letters, newest first: prompt id, deliveries, reason, entry id."""
    rows = queue.client.xrevrange(queue.keys.dead, count=count)
    return [
        {key.decode(): value.decode() for key, value in fields.items() if key != b"item"}
        | {"entry_id": entry_id.decode()}
        for entry_id, fields in rows
    ]


def snapshot(queue: RedisQueue, dead_letters: int = 20) -> dict[str, Any]:
    """Plain JSON-ready data; workers not seen for three heartbeats are marked ``stale``."""
    client, keys = queue.client, queue.keys
    now_ms = time.time() * 1000
    workers = {}
    for name, text in client.hgetall(keys.workers).items():
        state = json.loads(text)
        if now_ms - state["seen_ms"] > 3000 * queue.options.heartbeat_s:
            state["state"] = "stale"
        workers[name.decode()] = state
    return {
        "pending": int(client.zcard(keys.pending)),
        "leases": queue.leases(),
        "workers": workers,
        "dead_letter_count": int(client.xlen(keys.dead)),
        "dead_letters": newest_dead_letters(queue, dead_letters) if dead_letters else [],
        "history": int(client.zcard(keys.history)),
    }


def queue_metrics(queue: RedisQueue) -> QueueMetrics:
    """The snapshot in core's typed form (what the server's ``/metrics`` shows)."""
    report = snapshot(queue, dead_letters=0)
    workers = tuple(
        WorkerState(
            name,
            state["state"],
            state.get("prompt_id"),
            tuple(state.get("models") or ()),
            state.get("seen_ms"),
        )
        for name, state in sorted(report["workers"].items())
    )
    return QueueMetrics(
        report["pending"],
        len(report["leases"]),
        report["history"],
        report["dead_letter_count"],
        workers,
    )
