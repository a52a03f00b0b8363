"""A server and workers in separate processes on a real redis-server: websocket events
relayed from the worker to the client that queued the prompt, ``/queue``, ``/api/jobs``,
``/view``, ``/metrics``, ``loom queue status``, and graceful worker shutdown."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import urllib.request

import aiohttp
import pytest
from redis_cluster import LAUNCH, Cluster, wait_for, work

pytestmark = pytest.mark.timeout(240)


async def follow(cluster: Cluster, client_id: str, prompt: dict) -> tuple[str, list[dict]]:
    """Queue ``prompt`` as ``client_id`` and collect its websocket messages until done."""
    messages: list[dict] = []
    url = f"ws://127.0.0.1:{cluster.port}/ws?clientId={client_id}"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        loop = asyncio.get_running_loop()
        prompt_id = await loop.run_in_executor(None, cluster.queue_prompt, prompt, client_id)
        while True:
            frame = await ws.receive(timeout=60)
            assert frame.type == aiohttp.WSMsgType.TEXT, frame
            message = json.loads(frame.data)
            messages.append(message)
            data = message["data"]
            if message["type"] == "executing" and data["node"] is None:
                if data["prompt_id"] == prompt_id:
                    return prompt_id, messages


def test_server_relays_events_and_serves_what_workers_wrote(redis_server, tmp_path):
    cluster = Cluster(tmp_path / "base", redis_server.url)
    try:
        cluster.start_server()
        cluster.start_worker()
        prompt_id, messages = asyncio.run(follow(cluster, "alice", work("relayed")))
        kinds = [m["type"] for m in messages]
        for kind in ("execution_start", "executing", "executed", "execution_success"):
            assert kind in kinds, kinds
        executed = next(m["data"] for m in messages if m["type"] == "executed")
        assert executed["prompt_id"] == prompt_id and executed["node"] == "1"
        assert any(m["type"] == "status" for m in messages)  # computed by the server

        image = cluster.get(f"/history/{prompt_id}")[prompt_id]["outputs"]["1"]["images"][0]
        view = f"/view?filename={image['filename']}&subfolder=chaos&type=output"
        with urllib.request.urlopen(f"http://127.0.0.1:{cluster.port}{view}") as response:
            assert response.read() == b"relayed"
        jobs = cluster.get("/api/jobs?status=completed")["jobs"]
        assert [job["id"] for job in jobs] == [prompt_id]

        held = cluster.queue_prompt(work("held", hold=True), "bob")
        waiting = cluster.queue_prompt(work("waiting"), "bob")
        wait_for("held to run", lambda: cluster.running_pid("held"))
        queue = cluster.get("/queue")
        assert [item[1] for item in queue["queue_running"]] == [held]
        assert [item[1] for item in queue["queue_pending"]] == [waiting]
        with urllib.request.urlopen(f"http://127.0.0.1:{cluster.port}/metrics") as response:
            metrics = response.read().decode()
        assert "loom_queue_pending 1" in metrics and "loom_queue_running 1" in metrics
        assert 'state="running"} 1' in metrics

        status = subprocess.run(
            [
                sys.executable,
                "-c",
                LAUNCH,
                "queue",
                "status",
                "--json",
                "--queue",
                redis_server.url,
            ],
            capture_output=True,
            env=cluster.env,
            check=True,
        )
        report = json.loads(status.stdout)
        assert report["pending"] == 1 and [lease["prompt_id"] for lease in report["leases"]] == [
            held
        ]
        (worker,) = report["workers"].values()
        assert worker["state"] == "running" and worker["prompt_id"] == held
        cluster.release("held")
        wait_for("both in history", lambda: len(cluster.get("/history")) == 3)
    finally:
        cluster.stop()


def test_worker_shutdown_finishes_or_hands_back_the_running_prompt(redis_server, tmp_path):
    cluster = Cluster(tmp_path / "base", redis_server.url)  # default lease: 30 s
    redis = redis_server.client()
    try:
        cluster.start_server()
        first = cluster.start_worker()
        wait_for("the worker to advertise", lambda: redis.hlen("loom:workers") == 1)

        # One SIGTERM: the running prompt finishes, then the worker leaves.
        finished = cluster.queue_prompt(work("finish", hold=True), "c")
        wait_for("finish to run", lambda: cluster.running_pid("finish"))
        first.send_signal(signal.SIGTERM)
        cluster.release("finish")
        assert first.wait(60) == 0
        entry = cluster.get(f"/history/{finished}")[finished]
        assert entry["status"]["status_str"] == "success"
        assert redis.hlen("loom:workers") == 0  # withdrew its advertisement

        # Two: it interrupts the prompt and hands it back; the next worker takes it at once
        # (long before the 30 s lease would expire) and the delivery is not counted.
        second = cluster.start_worker()
        handed = cluster.queue_prompt(work("handed", hold=True), "c")
        wait_for("handed to run", lambda: cluster.running_pid("handed") == second.pid)
        second.send_signal(signal.SIGTERM)
        wait_for("the first signal to be seen", lambda: "finishing" in cluster.log_of(second))
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0
        assert cluster.get(f"/history/{handed}") == {}
        third = cluster.start_worker()
        wait_for("another worker to take it", lambda: cluster.running_pid("handed") == third.pid)
        (lease,) = redis.xpending_range("loom:stream", "workers", "-", "+", 10)
        assert lease["times_delivered"] == 1
        cluster.release("handed")
        entry = wait_for("handed in history", lambda: cluster.get(f"/history/{handed}"))[handed]
        assert entry["status"]["status_str"] == "success"
    finally:
        cluster.stop()


def test_two_servers_share_numbers_and_history_and_each_relays_to_its_own_clients(
    redis_server, tmp_path
):
    first = Cluster(tmp_path / "base", redis_server.url)
    second = Cluster(tmp_path / "base", redis_server.url)
    try:
        first.start_server()
        second.start_server()
        first.start_worker()
        numbers = [first.post("/prompt", {"prompt": work("via-first")})["number"]]
        prompt_id, messages = asyncio.run(follow(second, "carol", work("via-second")))
        assert "executed" in [m["type"] for m in messages]  # run by the worker, sent by `second`
        numbers.append(second.post("/prompt", {"prompt": work("again")})["number"])
        assert numbers[1] > numbers[0]  # one counter for the cluster
        wait_for("all three in history", lambda: len(first.get("/history")) == 3)
        assert first.get(f"/history/{prompt_id}")[prompt_id]["status"]["status_str"] == "success"
    finally:
        first.stop()
        second.stop()
