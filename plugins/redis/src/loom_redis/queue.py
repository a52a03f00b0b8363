"""The shared prompt queue on Redis: :class:`RedisQueue` implements core's ``PromptQueue``.

Layout under the prefix (default ``loom``): pending prompts wait in a sorted set scored by
their ComfyUI ``number`` (``front`` and priority work as in ComfyUI, ties in arrival order);
a worker takes one with the ``TAKE`` script, which moves it into the stream and delivers it
to the worker's consumer in one step, so from then on the consumer group's pending-entries
list is its lease (see :mod:`loom_redis.scripts`). History is a hash of entries plus a
sorted set giving their order. Workers renew their lease while running (:mod:`lease`),
take over expired ones with ``XAUTOCLAIM``, and dead-letter a prompt delivered too often.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
import redis

from loom.events import ExecutionEvent, now_ms
from loom.frontend import HistoryEntry, QueueItem, QueueMetrics
from loom_redis import scripts
from loom_redis.bus import Bus, Channels
from loom_redis.codec import decode_entry, decode_item, encode_entry, encode_item, model_files
from loom_redis.durable import sync_outputs
from loom_redis.lease import Lease, LeaseKeeper, Placement
from loom_redis.options import GROUP, RedisQueueOptions, split_url

log = logging.getLogger(__name__)

PARKING = "handed-back"  # the consumer released leases wait under


@attrs.frozen
class Keys:
    """Every key of one queue (one prefix)."""

    stream: str
    pending: str
    members: str
    items: str
    history: str
    entries: str
    history_counter: str
    numbers: str
    arrivals: str
    dead: str
    workers: str
    wake: str

    @classmethod
    def under(cls, prefix: str) -> Keys:
        names = [f.name for f in attrs.fields(cls)]
        return cls(**{name: f"{prefix}:{name}" for name in names})


class RedisQueue:
    """A ``PromptQueue`` many servers and ``loom worker`` processes share through Redis."""

    runs_in_process = False

    def __init__(
        self,
        client: redis.Redis,
        options: RedisQueueOptions | None = None,
        *,
        output_dir: Path | None = None,
        consumer: str | None = None,
    ) -> None:
        self.client = client
        self.options = options or RedisQueueOptions()
        self.keys = Keys.under(self.options.prefix)
        self.output_dir = output_dir
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.bus = Bus(client, Channels.under(self.options.prefix))
        self.keeper = LeaseKeeper(self)
        self._scripts = {
            name: client.register_script(getattr(scripts, name))
            for name in ("PUT", "TAKE", "HEARTBEAT", "FINISH", "RELEASE", "DELETE", "CLEAR")
        }
        self._group_ready = False
        self._next_claim_check = 0.0

    @classmethod
    def from_url(cls, url: str, *, output_dir: Path | None = None) -> RedisQueue:
        address, options = split_url(url)
        client = redis.Redis.from_url(address, socket_connect_timeout=5, health_check_interval=10)
        return cls(client, options, output_dir=output_dir)

    def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self._scripts[name](keys=keys, args=args)

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(self.keys.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def forget_group(self) -> None:
        """Create the consumer group again on next use (Redis lost it: flushed, no AOF)."""
        self._group_ready = False

    # -- front door (servers) --------------------------------------------------------------

    def next_number(self) -> int:
        return int(self.client.incr(self.keys.numbers)) - 1

    def put(self, item: QueueItem) -> None:
        sequence = int(self.client.incr(self.keys.arrivals))
        member = f"{sequence:016d}:{item.prompt_id}"
        keys = [self.keys.items, self.keys.members, self.keys.pending, self.keys.wake]
        if not self._script("PUT", keys, [item.prompt_id, encode_item(item), member, item.number]):
            log.info("prompt %s is already queued; not queued again", item.prompt_id)
            return
        self.bus.publish_changed()

    def delete(self, prompt_ids: Iterable[str]) -> None:
        ids = list(prompt_ids)
        if ids and self._script(
            "DELETE", [self.keys.pending, self.keys.members, self.keys.items], ids
        ):
            self.bus.publish_changed()

    def clear(self) -> None:
        self._script("CLEAR", [self.keys.pending, self.keys.members, self.keys.items], [])
        self.bus.publish_changed()

    def interrupt(self, prompt_id: str | None) -> None:
        self.bus.publish_interrupt(prompt_id)

    # -- views -------------------------------------------------------------------------------

    def pending(self) -> list[QueueItem]:
        members = self.client.zrange(self.keys.pending, 0, -1)
        return self._items([m.decode().split(":", 1)[1] for m in members])

    def running(self) -> list[QueueItem]:
        return self._items([lease["prompt_id"] for lease in self.leases()])

    def leases(self) -> list[dict[str, Any]]:
        """Every running prompt's lease: prompt id, consumer, idle ms, deliveries, entry id."""
        self._ensure_group()
        rows = self.client.xpending_range(self.keys.stream, GROUP, "-", "+", 10_000)
        if not rows:
            return []
        with self.client.pipeline() as pipe:
            for row in rows:
                pipe.xrange(self.keys.stream, row["message_id"], row["message_id"])
            entries = pipe.execute()
        leases = []
        for row, found in zip(rows, entries, strict=True):
            if not found:
                continue
            leases.append(
                {
                    "prompt_id": found[0][1][b"pid"].decode(),
                    "consumer": _text(row["consumer"]),
                    "idle_ms": row["time_since_delivered"],
                    "deliveries": row["times_delivered"],
                    "entry_id": _text(row["message_id"]),
                }
            )
        return leases

    def _items(self, prompt_ids: list[str]) -> list[QueueItem]:
        if not prompt_ids:
            return []
        found = self.client.hmget(self.keys.items, prompt_ids)
        return [decode_item(text) for text in found if text is not None]

    def remaining(self) -> int:
        self._ensure_group()
        with self.client.pipeline() as pipe:
            pipe.zcard(self.keys.pending)
            pipe.xpending(self.keys.stream, GROUP)
            waiting, summary = pipe.execute()
        return int(waiting) + int(summary["pending"])

    def metrics(self) -> QueueMetrics:
        from loom_redis.metrics import queue_metrics

        return queue_metrics(self)

    # -- history -------------------------------------------------------------------------------

    def history(
        self, max_items: int | None = None, offset: int = -1
    ) -> OrderedDict[str, HistoryEntry]:
        """Oldest first; ``max_items`` alone gives the newest N (ComfyUI's semantics)."""
        total = int(self.client.zcard(self.keys.history))
        if offset < 0 and max_items is not None:
            offset = max(total - max_items, 0)
        offset = max(offset, 0)
        end = -1 if max_items is None else offset + max_items - 1
        if max_items == 0:
            return OrderedDict()
        ids = [pid.decode() for pid in self.client.zrange(self.keys.history, offset, end)]
        found = self.client.hmget(self.keys.entries, ids) if ids else []
        return OrderedDict(
            (pid, decode_entry(text))
            for pid, text in zip(ids, found, strict=True)
            if text is not None
        )

    def history_item(self, prompt_id: str) -> HistoryEntry | None:
        text = self.client.hget(self.keys.entries, prompt_id)
        return None if text is None else decode_entry(text)

    def clear_history(self) -> None:
        self.client.delete(self.keys.history, self.keys.entries)

    def delete_history(self, prompt_ids: Iterable[str]) -> None:
        ids = list(prompt_ids)
        if ids:
            with self.client.pipeline() as pipe:
                pipe.zrem(self.keys.history, *ids)
                pipe.hdel(self.keys.entries, *ids)
                pipe.execute()

    # -- listeners -----------------------------------------------------------------------------

    def on_change(self, callback: Callable[[], None]) -> None:
        self.bus.listen("changed", callback)

    def on_interrupt(self, callback: Callable[[str | None], None]) -> None:
        self.bus.listen("interrupts", callback)

    def on_remote_event(self, callback: Callable[[ExecutionEvent], None]) -> None:
        self.bus.listen("events", callback)

    # -- worker side ---------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> QueueItem | None:
        """Lease the next prompt: an expired lease first, else the best pending one."""
        self._ensure_group()
        self.keeper.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            lease = None
            if time.monotonic() >= self._next_claim_check:
                # Expired leases are looked for at most every heartbeat (they expire after
                # three), so a busy worker does not pay for XAUTOCLAIM on every prompt.
                self._next_claim_check = time.monotonic() + self.options.heartbeat_s
                lease = self._claim_expired()
            lease = lease or self._take()
            if lease is not None:
                self.keeper.hold(lease)
                self.bus.publish_changed()
                return lease.item
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return None
            wait = min(left, 1.0, self.options.prefer_loaded_s)
            self.client.blpop([self.keys.wake], timeout=max(wait, 0.01))

    def _claim_expired(self) -> Lease | None:
        lease_ms = int(self.options.lease_s * 1000)
        _, claimed, _ = self.client.xautoclaim(
            self.keys.stream, GROUP, self.consumer, lease_ms, "0-0", count=1
        )
        for entry_id, fields in claimed:
            if not fields:
                continue
            rows = self.client.xpending_range(self.keys.stream, GROUP, entry_id, entry_id, 1)
            if not rows or _text(rows[0]["consumer"]) != self.consumer:
                continue
            deliveries = rows[0]["times_delivered"]
            prompt_id = fields[b"pid"].decode()
            text = self.client.hget(self.keys.items, prompt_id)
            if text is None:  # its item vanished: nothing can run it
                self.client.xack(self.keys.stream, GROUP, entry_id)
                self.client.xdel(self.keys.stream, entry_id)
                continue
            lease = Lease(decode_item(text), _text(entry_id), deliveries)
            if deliveries > self.options.max_deliveries:
                self._dead_letter(lease)
                continue
            log.info("took over prompt %s (delivery %d)", prompt_id, deliveries)
            return lease
        return None

    def _take(self) -> Lease | None:
        candidates = self.client.zrange(self.keys.pending, 0, 15)
        if not candidates:
            return None
        placement = Placement.read(self)
        if placement.others_idle:
            ids = [member.decode().split(":", 1)[1] for member in candidates]
            candidates = placement.order(candidates, self.client.hmget(self.keys.items, ids))
        for member in candidates:
            prompt_id = member.decode().split(":", 1)[1]
            taken = self._script(
                "TAKE",
                [self.keys.stream, self.keys.pending, self.keys.members, self.keys.items],
                [GROUP, self.consumer, member, prompt_id],
            )
            if taken and taken[1] is not None:
                return Lease(decode_item(taken[1]), _text(taken[0]), 1)
        return None

    def task_done(self, item: QueueItem, entry: HistoryEntry) -> None:
        """Store the result durably (outputs synced, history written), then acknowledge."""
        lease = self.keeper.release(item.prompt_id)
        if lease is None:
            log.warning("prompt %s finished without a lease; result dropped", item.prompt_id)
            return
        self.keeper.remember_models(model_files(item.prompt))
        if lease.handed_back:
            self._store(
                lease, "RELEASE", [self.consumer, lease.entry_id, lease.deliveries, PARKING]
            )
            return
        if self.output_dir is not None:
            sync_outputs(entry.outputs, self.output_dir)
        self._finish(lease, entry, reason="")

    def _dead_letter(self, lease: Lease) -> None:
        reason = (
            f"delivered {lease.deliveries} times (limit {self.options.max_deliveries}); "
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
        args = [
            self.consumer,
            lease.entry_id,
            lease.deliveries,
            lease.item.prompt_id,
            encode_entry(entry),
            self.options.max_history,
            reason,
            self.options.dead_letter_max,
        ]
        self._store(lease, "FINISH", args)

    def _store(self, lease: Lease, script: str, args: list[Any]) -> None:
        keys = [
            self.keys.stream,
            self.keys.history,
            self.keys.entries,
            self.keys.items,
            self.keys.dead,
            self.keys.history_counter,
        ]
        give_up = time.monotonic() + self.options.store_retry_s
        while True:
            try:
                done = self._script(
                    script, keys if script == "FINISH" else keys[:1], [GROUP, *args]
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
        self.bus.publish_changed()

    def hand_back(self, prompt_id: str) -> bool:
        """Mark a running prompt to be handed back unfinished at its ``task_done``."""
        return self.keeper.hand_back(prompt_id)

    def close(self) -> None:
        """Stop the background threads; a worker also withdraws its advertisement."""
        self.keeper.stop()
        self.bus.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
