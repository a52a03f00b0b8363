"""What ``loom run`` shows while a prompt runs: a tqdm bar per node that reports progress.

On a terminal each progress-reporting node (a sampler) gets a bar naming its id and title,
with steps, elapsed time, ETA and it/s or s/it, and model loads print as lines of their own
above it. When the output is not a terminal (a log file, CI), nothing is redrawn: each such
node writes one line with the same figures when it finishes, so the log stays readable.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

from loom.events import ExecutionEvent

#: Loggers whose INFO lines say that a model was loaded.
MODEL_LOAD_LOGGERS = ("loom.nodes.builtin.loaders",)
_ENDS = ("execution_success", "execution_error", "execution_interrupted")


class ProgressDisplay:
    """An execution-event callback drawing per-node progress on ``stream`` (stderr)."""

    def __init__(self, titles: dict[str, str] | None = None, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.titles = dict(titles or {})
        self.interactive = self.stream.isatty()
        self._bar: Any = None
        self._node: str | None = None
        self._started = 0.0
        self._last: tuple[int, int] = (0, 0)

    def label(self, node_id: str) -> str:
        title = self.titles.get(node_id)
        return f"node {node_id}" + (f" ({title})" if title else "")

    def __call__(self, event: ExecutionEvent) -> None:
        if event.type == "progress":
            node = str(event.data.get("node"))
            if node != self._node:
                self._finish()
                self._start(node)
            self._update(int(event.data["value"]), int(event.data["max"]))
        elif event.type == "executing" or event.type in _ENDS:
            self._finish()

    def write_line(self, text: str) -> None:
        """A line of its own, above any bar being drawn."""
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def _start(self, node: str) -> None:
        self._node, self._started, self._last = node, time.monotonic(), (0, 0)
        if self.interactive:
            from tqdm import tqdm

            self._bar = tqdm(
                desc=self.label(node), file=self.stream, leave=True, dynamic_ncols=True
            )

    def _update(self, value: int, total: int) -> None:
        self._last = (value, total)
        if self._bar is not None:
            if self._bar.total != total:
                self._bar.reset(total=total)
            self._bar.update(value - self._bar.n)

    def _finish(self) -> None:
        if self._node is None:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        else:
            from tqdm import tqdm

            value, total = self._last
            line = tqdm.format_meter(
                value, total, time.monotonic() - self._started, prefix=self.label(self._node)
            )
            self.stream.write(line + "\n")
            self.stream.flush()
        self._node = None


class ModelLoadLines(logging.Handler):
    """Prints model-load log records as their own lines through a :class:`ProgressDisplay`.

    Only while the loggers would not show INFO anyway (without ``-v``); they stop
    propagating meanwhile, so a line is never printed twice.
    """

    def __init__(self, display: ProgressDisplay) -> None:
        super().__init__(logging.INFO)
        self.display = display
        self._saved: list[tuple[logging.Logger, int, bool]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.display.write_line(record.getMessage())

    def __enter__(self) -> ModelLoadLines:
        for name in MODEL_LOAD_LOGGERS:
            logger = logging.getLogger(name)
            if logger.getEffectiveLevel() <= logging.INFO:
                continue  # -v: logging already shows these lines
            self._saved.append((logger, logger.level, logger.propagate))
            logger.setLevel(logging.INFO)
            logger.propagate = False
            logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for logger, level, propagate in self._saved:
            logger.removeHandler(self)
            logger.setLevel(level)
            logger.propagate = propagate
        self._saved.clear()
