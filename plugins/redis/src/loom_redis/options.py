"""The queue's knobs, read from the query string of its URL
(``redis://host:6379/0?lease_s=30&max_deliveries=3&prefix=loom``)."""

from __future__ import annotations

import urllib.parse

import attrs

from loom.errors import LoomError

#: The stream's consumer group every worker joins.
GROUP = "workers"


@attrs.frozen
class RedisQueueOptions:
    """How leases, retries and history behave. Every process sharing a queue should agree."""

    #: Key and channel prefix; several independent queues may share one Redis.
    prefix: str = "loom"
    #: A running prompt whose worker has not renewed its lease for this long is taken over
    #: by another worker (renewed every third of it while the prompt runs).
    lease_s: float = 30.0
    #: Deliveries after which a prompt goes to the dead-letter stream instead of running.
    max_deliveries: int = 3
    max_history: int = 10_000
    dead_letter_max: int = 10_000
    #: How long an idle worker leaves a prompt to another idle worker that already holds
    #: its models before taking it itself.
    prefer_loaded_s: float = 2.0
    #: How long a finished prompt's result waits for Redis to come back before it is given up
    #: (its lease then expires and another worker runs it again).
    store_retry_s: float = 300.0

    @property
    def heartbeat_s(self) -> float:
        return max(self.lease_s / 3, 0.05)


_FIELDS = {f.name: f.type for f in attrs.fields(RedisQueueOptions)}


def split_url(url: str) -> tuple[str, RedisQueueOptions]:
    """The Redis connection URL without the queue's own query parameters, and the options."""
    parts = urllib.parse.urlsplit(url)
    kept, options = [], {}
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key not in _FIELDS:
            kept.append((key, value))
            continue
        kind = {"str": str, "int": int, "float": float}[str(_FIELDS[key])]
        try:
            options[key] = kind(value)
        except ValueError:
            raise LoomError(
                f"queue URL: {key}={value!r} is not a valid {kind.__name__}",
                hint="e.g. redis://localhost:6379/0?lease_s=30&max_deliveries=3",
            ) from None
    query = urllib.parse.urlencode(kept)
    return urllib.parse.urlunsplit(parts._replace(query=query)), RedisQueueOptions(**options)
