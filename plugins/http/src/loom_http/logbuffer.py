"""A bounded in-memory copy of the server log for ``/internal/logs``."""

from __future__ import annotations

import collections
import logging
import time

MAX_ENTRIES = 10_000


class LogBuffer(logging.Handler):
    """Keeps the last :data:`MAX_ENTRIES` formatted records as ``{"t", "m"}`` entries."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        super().__init__(level=logging.INFO)
        self.entries: collections.deque[dict[str, str]] = collections.deque(maxlen=max_entries)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
            self.entries.append(
                {"t": f"{stamp}.{int(record.msecs):03d}", "m": self.format(record) + "\n"}
            )
        except Exception:  # logging must never raise
            self.handleError(record)

    def text(self) -> str:
        return "".join(entry["m"] for entry in self.entries)
