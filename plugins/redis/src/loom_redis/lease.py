"""A worker's side of leases: the one it holds, its renewal, its advertisement, and the
choice of which pending prompt to take (prefer prompts whose models it already holds)."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import attrs
import redis

from loom_redis.codec import decode_item, model_files
from loom_redis.options import GROUP

if TYPE_CHECKING:
    from loom_redis.queue import RedisQueue

log = logging.getLogger(__name__)

#: A worker not heard from for this many leases is dropped from the advertisements.
STALE_LEASES = 10
PRUNE_EVERY = 30  # heartbeats


@attrs.define
class Lease:
    """A prompt delivered to this worker: its stream entry and the delivery count the
    fenced scripts check."""

    item: Any
    entry_id: str
    deliveries: int
    handed_back: bool = False


class LeaseKeeper:
    """Renews the held lease every ``heartbeat_s`` and advertises the worker (state, the
    prompt it runs, the models it holds) in the queue's ``workers`` hash."""

    def __init__(self, queue: RedisQueue) -> None:
        self.queue = queue
        self.lease: Lease | None = None
        self.models: list[str] = []
        self._lock = threading.RLock()  # hand_back runs in a signal handler
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_ms = int(time.time() * 1000)

    def start(self) -> None:
        if self._thread is None:
            self.advertise()
            self._thread = threading.Thread(target=self._run, name="loom-redis-lease", daemon=True)
            self._thread.start()

    def hold(self, lease: Lease) -> None:
        with self._lock:
            self.lease = lease
        self.advertise()

    def release(self, prompt_id: str) -> Lease | None:
        with self._lock:
            lease, self.lease = self.lease, None
        if lease is not None and lease.item.prompt_id != prompt_id:
            return None
        return lease

    def hand_back(self, prompt_id: str) -> bool:
        with self._lock:
            if self.lease is None or self.lease.item.prompt_id != prompt_id:
                return False
            self.lease.handed_back = True
            return True

    def remember_models(self, models: list[str]) -> None:
        """What the executor's cache holds after a prompt: the models it used."""
        self.models = models

    def advertise(self) -> None:
        lease = self.lease
        state = {
            "state": "running" if lease is not None else "idle",
            "prompt_id": lease.item.prompt_id if lease is not None else None,
            "models": self.models,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_ms": self.started_ms,
            "seen_ms": int(time.time() * 1000),
        }
        try:
            self.queue.client.hset(self.queue.keys.workers, self.queue.consumer, json.dumps(state))
        except redis.RedisError as exc:
            log.warning("cannot advertise worker %s: %s", self.queue.consumer, exc)

    def _renew(self) -> None:
        lease = self.lease
        if lease is None or lease.handed_back:
            return
        queue = self.queue
        kept = queue._script(
            "HEARTBEAT",
            [queue.keys.stream],
            [GROUP, queue.consumer, lease.entry_id, lease.deliveries],
        )
        if not kept and self.lease is lease:
            log.warning("lease on prompt %s was taken over; stopping it", lease.item.prompt_id)
            for interrupt in list(queue.bus.interrupts):
                interrupt(lease.item.prompt_id)

    def _run(self) -> None:
        beats = 0
        while not self._stop.wait(self.queue.options.heartbeat_s):
            try:
                self._renew()
                self.advertise()
                beats += 1
                if beats % PRUNE_EVERY == 0:
                    self.prune()
            except redis.RedisError as exc:
                log.warning("lease renewal failed: %s", exc)

    def prune(self) -> None:
        """Forget workers silent for ``STALE_LEASES`` leases (killed ones never say goodbye),
        and their consumers once they hold no lease."""
        queue = self.queue
        silent_ms = STALE_LEASES * queue.options.lease_s * 1000
        now_ms = time.time() * 1000
        for name, text in queue.client.hgetall(queue.keys.workers).items():
            if now_ms - json.loads(text)["seen_ms"] > silent_ms:
                queue.client.hdel(queue.keys.workers, name)
                _drop_consumer(queue, name.decode())

    def stop(self) -> None:
        """Withdraw the advertisement and, holding no lease, the consumer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            try:
                self.queue.client.hdel(self.queue.keys.workers, self.queue.consumer)
                _drop_consumer(self.queue, self.queue.consumer)
            except redis.RedisError:
                pass


def _drop_consumer(queue: RedisQueue, name: str) -> None:
    held = queue.client.xpending_range(queue.keys.stream, GROUP, "-", "+", 1, consumername=name)
    if not held:
        queue.client.xgroup_delconsumer(queue.keys.stream, GROUP, name)


@attrs.define
class Placement:
    """Which idle workers hold which models, as advertised (seen within three heartbeats)."""

    mine: frozenset[str]
    others_idle: list[frozenset[str]]
    prefer_s: float

    @classmethod
    def read(cls, queue: RedisQueue) -> Placement:
        now_ms = time.time() * 1000
        fresh_ms = 3000 * queue.options.heartbeat_s
        others = []
        for name, text in queue.client.hgetall(queue.keys.workers).items():
            state = json.loads(text)
            if name.decode() == queue.consumer or now_ms - state["seen_ms"] > fresh_ms:
                continue
            if state["state"] == "idle" and state["models"]:
                others.append(frozenset(state["models"]))
        return cls(frozenset(queue.keeper.models), others, queue.options.prefer_loaded_s)

    def order(self, members: list[bytes], texts: list[bytes | None]) -> list[bytes]:
        """Candidates in queue order, minus those an idle worker holding their models should
        get first (until they have waited ``prefer_s``). ``texts``: the members' items."""
        chosen = []
        for member, text in zip(members, texts, strict=True):
            if text is None:
                chosen.append(member)
                continue
            item = decode_item(text)
            models = frozenset(model_files(item.prompt))
            waited_s = time.time() - item.extra_data.get("create_time", 0) / 1000
            elsewhere = any(models <= held for held in self.others_idle)
            if models and not models <= self.mine and elsewhere and waited_s < self.prefer_s:
                continue
            chosen.append(member)
        return chosen
