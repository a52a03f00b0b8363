"""A worker's side of the queue: claiming the next prompt and storing its result.

A worker claims either an expired lease (``XAUTOCLAIM``) or the best pending prompt (the
``TAKE`` script); it stores the result with the fenced ``FINISH``/``RELEASE`` scripts, so a
result whose lease was taken over is dropped, and dead-letters a prompt delivered too often
(see :mod:`loom_redis.scripts`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import redis

from loom.events import now_ms
from loom.frontend import HistoryEntry, QueueItem
from loom_redis.codec import as_text, decode_item, encode_entry, model_files
from loom_redis.durable import sync_outputs
from loom_redis.lease import Lease, Placement
from loom_redis.options import GROUP

if TYPE_CHECKING:
    from loom_redis.queue import RedisQueue

log = logging.getLogger(__name__)

PARKING = "handed-back"  # the consumer released leases wait under


class Claims:
    """Claims prompts for one :class:`~loom_redis.queue.RedisQueue` consumer and stores
    their results."""

    def __init__(self, queue: RedisQueue) -> None:
        self.queue = queue
        self._next_claim_check = 0.0

    def next(self, timeout: float | None) -> QueueItem | None:
        """Lease the next prompt: an expired lease first, else the best pending one."""
        queue = self.queue
        queue.keeper.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            lease = None
            if time.monotonic() >= self._next_claim_check:
                # Expired leases are looked for at most every heartbeat (they expire after
                # three), so a busy worker does not pay for XAUTOCLAIM on every prompt.
                self._next_claim_check = time.monotonic() + queue.options.heartbeat_s
                lease = self._claim_expired()
            lease = lease or self._take()
            if lease is not None:
                queue.keeper.hold(lease)
                queue.bus.publish_changed()
                return lease.item
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return None
            wait = min(left, 1.0, queue.options.prefer_loaded_s)
            queue.client.blpop([queue.keys.wake], timeout=max(wait, 0.01))

    def _claim_expired(self) -> Lease | None:
        queue, client, keys = self.queue, self.queue.client, self.queue.keys
        lease_ms = int(queue.options.lease_s * 1000)
        _, claimed, _ = client.xautoclaim(
            keys.stream, GROUP, queue.consumer, lease_ms, "0-0", count=1
        )
        for entry_id, fields in claimed:
            if not fields:
                continue
            rows = client.xpending_range(keys.stream, GROUP, entry_id, entry_id, 1)
            if not rows or as_text(rows[0]["consumer"]) != queue.consumer:
                continue
            deliveries = rows[0]["times_delivered"]
            prompt_id = fields[b"pid"].decode()
            text = client.hget(keys.items, prompt_id)
            if text is None:  # its item vanished: nothing can run it
                client.xack(keys.stream, GROUP, entry_id)
                client.xdel(keys.stream, entry_id)
                continue
            lease = Lease(decode_item(text), as_text(entry_id), deliveries)
            if deliveries > queue.options.max_deliveries:
                self._dead_letter(lease)
                continue
            log.info("took over prompt %s (delivery %d)", prompt_id, deliveries)
            return lease
        return None

    def _take(self) -> Lease | None:
        queue, keys = self.queue, self.queue.keys
        candidates = queue.client.zrange(keys.pending, 0, 15)
        if not candidates:
            return None
        placement = Placement.read(queue)
        if placement.others_idle:
            ids = [member.decode().split(":", 1)[1] for member in candidates]
            candidates = placement.order(candidates, queue.client.hmget(keys.items, ids))
        for member in candidates:
            prompt_id = member.decode().split(":", 1)[1]
            taken = queue._script(
                "TAKE",
                [keys.stream, keys.pending, keys.members, keys.items],
                [GROUP, queue.consumer, member, prompt_id],
            )
            if taken and taken[1] is not None:
                return Lease(decode_item(taken[1]), as_text(taken[0]), 1)
        return None

    def done(self, item: QueueItem, entry: HistoryEntry) -> None:
        """Store the result durably (outputs synced, history written), then acknowledge."""
        queue = self.queue
        lease = queue.keeper.release(item.prompt_id)
        if lease is None:
            log.warning("prompt %s finished without a lease; result dropped", item.prompt_id)
            return
        queue.keeper.remember_models(model_files(item.prompt))
        if lease.handed_back:
            self._store(
                lease, "RELEASE", [queue.consumer, lease.entry_id, lease.deliveries, PARKING]
            )
            return
        if queue.output_dir is not None:
            sync_outputs(entry.outputs, queue.output_dir)
        self._finish(lease, entry, reason="")

    def _dead_letter(self, lease: Lease) -> None:
        limit = self.queue.options.max_deliveries
        reason = (
            f"delivered {lease.deliveries} times (limit {limit}); "
            "the worker running it stopped each time, so it is not run again"
        )
        log.warning("prompt %s dead-lettered: %s", lease.item.prompt_id, reason)
        message = {
            "prompt_id": lease.item.prompt_id,
            "exception_message": reason,
            "exception_type": "loom_redis.DeadLetter",
            "node_id": None,
            "node_type": None,
            "traceback": [],
            "timestamp": now_ms(),
        }
        status = {
            "status_str": "error",
            "completed": False,
            "messages": [["execution_error", message]],
        }
        entry = HistoryEntry(lease.item, {}, status, {}, None, now_ms(), message)
        self._finish(lease, entry, reason=reason)

    def _finish(self, lease: Lease, entry: HistoryEntry, reason: str) -> None:
        options = self.queue.options
        args = [
            self.queue.consumer,
            lease.entry_id,
            lease.deliveries,
            lease.item.prompt_id,
            encode_entry(entry),
            options.max_history,
            reason,
            options.dead_letter_max,
        ]
        self._store(lease, "FINISH", args)

    def _store(self, lease: Lease, script: str, args: list[Any]) -> None:
        queue, keys = self.queue, self.queue.keys
        finish_keys = [
            keys.stream,
            keys.history,
            keys.entries,
            keys.items,
            keys.dead,
            keys.history_counter,
        ]
        give_up = time.monotonic() + queue.options.store_retry_s
        while True:
            try:
                done = queue._script(
                    script, finish_keys if script == "FINISH" else finish_keys[:1], [GROUP, *args]
                )
                break
            except redis.ConnectionError as exc:
                if time.monotonic() > give_up:
                    log.error("prompt %s: Redis unreachable, result dropped", lease.item.prompt_id)
                    return
                log.warning(
                    "prompt %s: Redis unreachable (%s); retrying", lease.item.prompt_id, exc
                )
                time.sleep(0.5)
        if not done:
            log.warning(
                "prompt %s: lease was taken over (delivery %d); this result is dropped",
                lease.item.prompt_id,
                lease.deliveries,
            )
        queue.bus.publish_changed()
