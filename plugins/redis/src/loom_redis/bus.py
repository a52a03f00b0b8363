"""Pub/sub between the processes sharing a queue: queue changes, interrupts, and the
execution events workers relay to the server that holds the prompt's websocket client.

Messages are fire-and-forget (a process that is down misses them); everything durable
(queue, leases, history) lives in keys and streams, never only on a channel.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import attrs
import redis

import loom
from loom.events import ExecutionEvent
from loom_redis.codec import decode_event, encode_event

log = logging.getLogger(__name__)

NO_PROMPT = ""  # an interrupt of every running prompt
#: Listener kind -> the :class:`Channels` field it listens on.
CHANNEL_OF = {"changed": "changed", "interrupts": "interrupt", "events": "events"}


@attrs.define
class Channels:
    """Channel names under one queue's key prefix."""

    changed: str
    interrupt: str
    events: str

    @classmethod
    def under(cls, prefix: str) -> Channels:
        return cls(f"{prefix}:ch:changed", f"{prefix}:ch:interrupt", f"{prefix}:ch:events")


class Bus:
    """Publishes on the queue's channels and, once a listener exists, runs one subscriber
    thread that calls the listeners (reconnecting after Redis restarts)."""

    def __init__(self, client: redis.Redis, channels: Channels) -> None:
        self.client = client
        self.channels = channels
        self.changed: list[Callable[[], None]] = []
        self.interrupts: list[Callable[[str | None], None]] = []
        self.events: list[Callable[[ExecutionEvent], None]] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wanted: set[str] = set()
        self._outbox: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        self._sender: threading.Thread | None = None
        self._sender_lock = threading.Lock()

    # -- publishing: queued and sent in batches by one thread, in order; never raises ----------

    def _publish(self, channel: str, message: str) -> None:
        if self._sender is None:
            with self._sender_lock:
                if self._sender is None:
                    self._sender = threading.Thread(
                        target=self._send, name="loom-redis-publish", daemon=True
                    )
                    self._sender.start()
        self._outbox.put((channel, message))

    def _send(self) -> None:
        while True:
            batch = [self._outbox.get()]
            while not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            stop = None in batch
            messages = [message for message in batch if message is not None]
            if messages:
                try:
                    with self.client.pipeline(transaction=False) as pipe:
                        for channel, text in messages:
                            pipe.publish(channel, text)
                        pipe.execute()
                except redis.RedisError as exc:  # a lost notice must not fail a prompt
                    log.warning("cannot publish %d queue messages: %s", len(messages), exc)
            if stop:
                return

    def publish_changed(self) -> None:
        self._publish(self.channels.changed, "1")

    def publish_interrupt(self, prompt_id: str | None) -> None:
        self._publish(self.channels.interrupt, prompt_id or NO_PROMPT)

    def publish_event(self, event: ExecutionEvent) -> None:
        self._publish(self.channels.events, encode_event(event))

    # -- listening ----------------------------------------------------------------------------

    def listen(self, kind: str, callback: Callable[..., None]) -> None:
        """Call ``callback`` for messages of ``kind`` (``changed``, ``interrupts`` or
        ``events``); only channels someone listens to are subscribed."""
        getattr(self, kind).append(callback)
        with self._sender_lock:
            self._wanted.add(getattr(self.channels, CHANNEL_OF[kind]))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="loom-redis-bus", daemon=True
                )
                self._thread.start()

    def ignore(self, kind: str) -> None:
        """Drop every listener of ``kind`` and stop receiving its channel."""
        getattr(self, kind).clear()
        with self._sender_lock:
            self._wanted.discard(getattr(self.channels, CHANNEL_OF[kind]))

    def close(self) -> None:
        """Send what is queued, then stop both threads."""
        self._stop.set()
        if self._sender is not None:
            self._outbox.put(None)
            self._sender.join(5)
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            subscribed: set[str] = set()
            try:
                while not self._stop.is_set():
                    with self._sender_lock:
                        wanted = set(self._wanted)
                    if wanted - subscribed:
                        pubsub.subscribe(*(wanted - subscribed))
                    if subscribed - wanted:
                        pubsub.unsubscribe(*(subscribed - wanted))
                    subscribed = wanted
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None:
                        self._dispatch(message["channel"], message["data"])
            except redis.RedisError as exc:
                log.warning("queue channels lost (%s); resubscribing", exc)
                self._stop.wait(0.5)
            finally:
                pubsub.close()

    def _dispatch(self, channel: Any, data: Any) -> None:
        channel = channel.decode() if isinstance(channel, bytes) else channel
        try:
            if channel == self.channels.changed:
                for changed in list(self.changed):
                    changed()
            elif channel == self.channels.interrupt:
                text = data.decode() if isinstance(data, bytes) else data
                for interrupt in list(self.interrupts):
                    interrupt(text or None)
            elif channel == self.channels.events:
                event = decode_event(data)
                for listener in list(self.events):
                    listener(event)
        except Exception:  # a listener's bug must not end the subscription
            log.exception("queue channel listener failed on %s", channel)


class EventPublisher:
    """A plugin object ``loom worker`` registers on its runtime: its execution events go to
    the servers (``status`` stays local: servers compute it from the shared queue)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    @loom.hookimpl
    def on_execution_event(self, event: ExecutionEvent) -> None:
        if event.type != "status":
            self.bus.publish_event(event)
