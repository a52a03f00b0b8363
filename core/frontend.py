"""What a frontend plugin builds on: an HTTP server, a queue worker, a command that runs prompts.

Node and model plugins need only :mod:`loom` and the modules it lists in
:data:`loom.PUBLIC_MODULES`; a frontend also drives the runtime, the shared prompt queue and
the wire formats, and imports those from here (one place, so the executor's internals can
move without breaking frontends). Importing this module loads the executor (no torch).
"""

from __future__ import annotations

from loom.cli.report import execution_error_report, output_paths, validation_report
from loom.events import BROADCAST_TYPES, ExecutionEvent, Preview
from loom.executor.executor import ExecutionResult, Executor
from loom.executor.queue import HistoryEntry, InProcessQueue, PromptQueue, QueueItem
from loom.executor.service import PromptService, Submitted
from loom.nodes.object_info import object_info
from loom.nodes.object_info import to_json as node_info_json
from loom.paths import PathOutsideError, confine, is_inside
from loom.runtime import Runtime
from loom.settings import Settings
from loom.workflow import convert_workflow, is_ui_workflow

__all__ = [
    "BROADCAST_TYPES",
    "ExecutionEvent",
    "ExecutionResult",
    "Executor",
    "HistoryEntry",
    "InProcessQueue",
    "PathOutsideError",
    "Preview",
    "PromptQueue",
    "PromptService",
    "QueueItem",
    "Runtime",
    "Settings",
    "Submitted",
    "confine",
    "convert_workflow",
    "execution_error_report",
    "is_inside",
    "is_ui_workflow",
    "node_info_json",
    "object_info",
    "output_paths",
    "validation_report",
]
