"""The chaos test of issue 18, on a real redis-server (AOF) and real processes: one
``loom serve --queue``, three ``loom worker`` subprocesses (respawned when they die, as a
supervisor would), 200 model-free prompts from 20 clients; a worker SIGKILLed while running
a prompt and another while idle; a poison prompt that kills every worker it reaches; Redis
itself SIGKILLed and restarted mid-run; an interrupt reaching a prompt in another process.

Every wait is on state (history, files the nodes write, Redis keys) with a bounded timeout.
"""

from __future__ import annotations

import os
import signal
import urllib.error
from concurrent.futures import ThreadPoolExecutor

import pytest
from redis_cluster import Cluster, poison, wait_for, work

pytestmark = pytest.mark.timeout(300)

CLIENTS, PER_CLIENT = 20, 10


def history_or_none(cluster: Cluster) -> dict | None:
    try:
        return cluster.get("/history")
    except (urllib.error.URLError, OSError):
        return None  # the server answers 500 while Redis restarts


def test_chaos_every_prompt_ends_once_in_history_with_its_outputs(redis_server, tmp_path):
    url = f"{redis_server.url}?lease_s=3&max_deliveries=2"
    cluster = Cluster(tmp_path / "base", url)
    redis = redis_server.client()
    try:
        cluster.start_server()
        for _ in range(3):
            cluster.start_worker()
        wait_for("3 workers to advertise", lambda: redis.hlen("loom:workers") >= 3)

        # A worker dies while running a prompt; another dies idle; a supervisor restarts them.
        held = cluster.queue_prompt(work("held", hold=True), "held-client")
        victim = wait_for("the held prompt to run", lambda: cluster.running_pid("held"))
        idle = next(w for w in cluster.alive_workers() if w.pid != victim)
        os.kill(victim, signal.SIGKILL)
        idle.send_signal(signal.SIGKILL)
        wait_for("both workers to die", lambda: len(cluster.alive_workers()) == 1)
        cluster.release("held")
        cluster.heal(3)

        def client(number: int) -> list[str]:
            return [
                cluster.queue_prompt(work(f"c{number}-{n}"), f"client-{number}")
                for n in range(PER_CLIENT)
            ]

        with ThreadPoolExecutor(CLIENTS) as pool:
            submitted = [pid for ids in pool.map(client, range(CLIENTS)) for pid in ids]
        poisoned = cluster.queue_prompt(poison("poison"), "poison-client")
        assert len(set(submitted)) == CLIENTS * PER_CLIENT

        def finished() -> int:
            cluster.heal(3)
            history = history_or_none(cluster)
            return 0 if history is None else len(history)

        wait_for("a third of the prompts", lambda: finished() >= 70, timeout_s=120)
        redis_server.restart()  # SIGKILL: only what the AOF holds survives
        everything = {*submitted, held, poisoned}
        wait_for("every prompt in history", lambda: finished() >= len(everything), timeout_s=180)

        history = cluster.get("/history")
        assert set(history) == everything  # none lost, none extra
        for number in range(CLIENTS):
            for n in range(PER_CLIENT):
                assert cluster.chaos(f"c{number}-{n}.txt").read_text() == f"c{number}-{n}"
        for prompt_id in submitted:
            entry = history[prompt_id]
            assert entry["status"]["status_str"] == "success", entry["status"]
            (image,) = entry["outputs"]["1"]["images"]
            assert image["subfolder"] == "chaos"

        # The killed prompt ran again elsewhere and finished once.
        assert history[held]["status"]["status_str"] == "success"
        assert len({path.suffix for path in cluster.runs_of("held")}) >= 2  # two processes

        # The poison prompt killed max_deliveries workers, then went to the dead letters.
        assert len(cluster.runs_of("poison")) == 2
        (dead,) = redis.xrange("loom:dead")
        assert dead[1][b"prompt_id"].decode() == poisoned and dead[1][b"deliveries"] == b"3"
        message = history[poisoned]["status"]["messages"][-1]
        assert (
            message[0] == "execution_error"
            and "delivered 3 times" in message[1]["exception_message"]
        )

        # Nothing is left leased or pending.
        assert redis.xpending("loom:stream", "workers")["pending"] == 0
        assert redis.zcard("loom:pending") == 0
        assert cluster.get("/queue") == {"queue_running": [], "queue_pending": []}

        # An interrupt posted to the server stops the prompt a worker process runs.
        stopped = cluster.queue_prompt(work("stop-me", hold=True), "stop-client")
        wait_for("stop-me to run", lambda: cluster.running_pid("stop-me"))
        cluster.post("/interrupt", {"prompt_id": stopped})
        entry = wait_for("stop-me in history", lambda: cluster.get(f"/history/{stopped}"))[stopped]
        assert entry["status"]["messages"][-1][0] == "execution_interrupted"
        assert not cluster.chaos("stop-me.txt").exists()
    finally:
        cluster.stop()
