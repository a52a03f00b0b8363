"""``/metrics``: the queue's depth in Prometheus' text format (core's in-process queue here;
the loom-redis tests cover a shared queue with its workers)."""

from __future__ import annotations

import pytest
from http_helpers import image_prompt
from loom_http.routes.metrics import prometheus_text

from loom.executor.queue import QueueMetrics, WorkerState


@pytest.mark.asyncio
async def test_metrics_show_pending_prompts(make_client):
    client = await make_client(start_worker=False)
    for _ in range(2):
        response = await client.post("/prompt", json={"prompt": image_prompt(size=8)})
        assert response.status == 200
    response = await client.get("/metrics")
    assert response.status == 200 and response.content_type == "text/plain"
    text = await response.text()
    assert "loom_queue_pending 2\n" in text and "loom_queue_running 0\n" in text
    assert "# TYPE loom_queue_pending gauge" in text


def test_worker_labels_are_escaped():
    metrics = QueueMetrics(0, 1, 0, 0, (WorkerState('gpu"1', "running", "p"),))
    assert 'loom_worker_state{worker="gpu\\"1",state="running"} 1' in prometheus_text(metrics)
