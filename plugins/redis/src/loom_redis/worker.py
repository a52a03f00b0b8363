"""``loom worker``'s loop: lease a prompt, run it, store and acknowledge its result.

Stopping is graceful: the first SIGTERM/SIGINT lets the running prompt finish, then the
worker leaves; a second one interrupts it and hands its lease back unfinished (another
worker takes it at once, the delivery is not counted against it).
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import TYPE_CHECKING

import redis

from loom.frontend import PromptService
from loom_redis.bus import EventPublisher

if TYPE_CHECKING:
    from loom.frontend import Runtime
    from loom_redis.queue import RedisQueue

log = logging.getLogger(__name__)


class Worker:
    """Runs prompts from a :class:`RedisQueue` on one runtime until stopped."""

    def __init__(self, runtime: Runtime, queue: RedisQueue) -> None:
        self.runtime = runtime
        self.queue = queue
        self.service = PromptService(runtime)
        # A worker has no websocket clients: servers compute `status` from the queue, so
        # it need not hear (and react to) every change of the shared queue.
        queue.bus.ignore("changed")
        self.stopping = threading.Event()
        self._current: str | None = None
        runtime.host.pm.register(EventPublisher(queue.bus), name="loom_redis.events")

    def run(self) -> None:
        """Work until :meth:`stop`; always withdraws from the queue on the way out."""
        try:
            while not self.stopping.is_set():
                try:
                    item = self.queue.get(timeout=1.0)
                except redis.RedisError as exc:  # Redis restarting, failing over, flushed
                    log.warning("cannot take a prompt (%s); retrying", exc)
                    self.queue.forget_group()
                    self.stopping.wait(0.5)
                    continue
                if item is None:
                    continue
                self._current = item.prompt_id
                try:
                    self.service.run_item(item)
                finally:
                    self._current = None
        finally:
            self.queue.close()

    def stop(self, hand_back: bool = False) -> None:
        """Leave after the running prompt; with ``hand_back``, interrupt it and give it back."""
        self.stopping.set()
        current = self._current
        if hand_back and current is not None and self.queue.hand_back(current):
            log.info("handing prompt %s back", current)
            self.runtime.executor.interrupt()

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: object) -> None:
            again = self.stopping.is_set()
            log.info(
                "signal %d: %s", signum, "handing back" if again else "finishing, then leaving"
            )
            self.stop(hand_back=again)

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
