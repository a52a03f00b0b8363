"""The shared prompt queue on Redis: :class:`RedisQueue` implements core's ``PromptQueue``.

Layout under the prefix (default ``loom``): pending prompts wait in a sorted set scored by
their ComfyUI ``number`` (``front`` and priority work as in ComfyUI, ties in arrival order);
a worker takes one with the ``TAKE`` script, which moves it into the stream and delivers it
to the worker's consumer in one step, so from then on the consumer group's pending-entries
list is its lease (see :mod:`loom_redis.scripts`). History is a hash of entries plus a
sorted set giving their order. Workers renew their lease while running (:mod:`lease`),
take over expired ones with ``XAUTOCLAIM``, and dead-letter a prompt delivered too often
(the worker side, :mod:`loom_redis.claims`).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
import redis

from loom.events import ExecutionEvent
from loom.frontend import HistoryEntry, QueueItem, QueueMetrics
from loom_redis import scripts
from loom_redis.bus import Bus, Channels
from loom_redis.claims import Claims
from loom_redis.codec import as_text, decode_entry, decode_item, encode_item
from loom_redis.lease import LeaseKeeper
from loom_redis.options import GROUP, RedisQueueOptions, split_url

log = logging.getLogger(__name__)


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
        self.claims = Claims(self)

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
                    "consumer": as_text(row["consumer"]),
                    "idle_ms": row["time_since_delivered"],
                    "deliveries": row["times_delivered"],
                    "entry_id": as_text(row["message_id"]),
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

    # -- worker side (see :mod:`loom_redis.claims`) ------------------------------------------

    def get(self, timeout: float | None = None) -> QueueItem | None:
        """Lease the next prompt: an expired lease first, else the best pending one."""
        self._ensure_group()
        return self.claims.next(timeout)

    def task_done(self, item: QueueItem, entry: HistoryEntry) -> None:
        """Store the result durably (outputs synced, history written), then acknowledge."""
        self.claims.done(item, entry)

    def hand_back(self, prompt_id: str) -> bool:
        """Mark a running prompt to be handed back unfinished at its ``task_done``."""
        return self.keeper.hand_back(prompt_id)

    def close(self) -> None:
        """Stop the background threads; a worker also withdraws its advertisement."""
        self.keeper.stop()
        self.bus.close()
