"""What a frontend plugin builds on: an HTTP server, a queue worker, a command that runs prompts.

Node and model plugins need only :mod:`loom` and the modules it lists in
:data:`loom.PUBLIC_MODULES`; a frontend also drives the runtime, the shared prompt queue and
the wire formats, and imports those from here (one place, so the executor's internals can
move without breaking frontends). A compatibility layer that runs another program's node code
(loom-comfy-compat) is a frontend too: it also takes the node-definition types, the running
node's context and the image-saving helpers from here. Importing this module loads the
executor (no torch).
"""

from __future__ import annotations

from loom.cli.progress import ModelLoadLines, ProgressDisplay
from loom.cli.report import execution_error_report, output_paths, validation_report
from loom.events import BROADCAST_TYPES, ExecutionEvent, Preview
from loom.executor.context import current_context
from loom.executor.dynamic_prompt import DynamicPrompt
from loom.executor.executor import ExecutionResult, Executor
from loom.executor.queue import (
    HistoryEntry,
    InProcessQueue,
    PromptQueue,
    QueueItem,
    QueueMetrics,
    WorkerState,
)
from loom.executor.service import PromptService, Submitted
from loom.nodes.builtin.animation import save_animated_png, save_animated_webp
from loom.nodes.builtin.image_io import save_images, split_annotation
from loom.nodes.builtin.save_paths import get_save_path
from loom.nodes.compat import accepted_args, call_with_accepted
from loom.nodes.object_info import object_info
from loom.nodes.object_info import to_json as node_info_json
from loom.nodes.spec import InputTypes, NodeDef
from loom.paths import PathOutsideError, confine, is_inside
from loom.runtime import Runtime
from loom.settings import Settings
from loom.workflow import convert_workflow, is_ui_workflow

__all__ = [
    "BROADCAST_TYPES",
    "DynamicPrompt",
    "ExecutionEvent",
    "ExecutionResult",
    "Executor",
    "HistoryEntry",
    "InProcessQueue",
    "InputTypes",
    "ModelLoadLines",
    "NodeDef",
    "PathOutsideError",
    "Preview",
    "ProgressDisplay",
    "PromptQueue",
    "PromptService",
    "QueueItem",
    "QueueMetrics",
    "Runtime",
    "Settings",
    "Submitted",
    "WorkerState",
    "accepted_args",
    "call_with_accepted",
    "confine",
    "convert_workflow",
    "current_context",
    "execution_error_report",
    "get_save_path",
    "is_inside",
    "is_ui_workflow",
    "node_info_json",
    "object_info",
    "output_paths",
    "save_animated_png",
    "save_animated_webp",
    "save_images",
    "split_annotation",
    "validation_report",
]
