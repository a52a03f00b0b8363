"""``/metrics``: the prompt queue's depth and its workers' state in Prometheus' text format
(Loom's own route, not ComfyUI's; with a shared queue it covers the whole cluster)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from loom.executor.queue import QueueMetrics
from loom_http.routes import Routes
from loom_http.state import runtime_of

routes = Routes()


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(metrics: QueueMetrics) -> str:
    lines = []
    for name, value, meaning in (
        ("loom_queue_pending", metrics.pending, "Prompts waiting to run."),
        ("loom_queue_running", metrics.running, "Prompts running (leased)."),
        ("loom_queue_history", metrics.history, "Finished prompts kept in history."),
        (
            "loom_queue_dead_letters",
            metrics.dead_letters,
            "Prompts given up after too many deliveries.",
        ),
    ):
        lines += [f"# HELP {name} {meaning}", f"# TYPE {name} gauge", f"{name} {value}"]
    lines += [
        "# HELP loom_worker_state 1 for the state each worker last reported.",
        "# TYPE loom_worker_state gauge",
    ]
    for worker in metrics.workers:
        lines.append(
            f'loom_worker_state{{worker="{_label(worker.name)}",state="{worker.state}"}} 1'
        )
    return "\n".join(lines) + "\n"


@routes.get("/metrics", prefixed=False)
async def get_metrics(request: web.Request) -> web.Response:
    queue = runtime_of(request).queue
    metrics = await asyncio.get_running_loop().run_in_executor(None, queue.metrics)
    return web.Response(text=prometheus_text(metrics), content_type="text/plain", charset="utf-8")
