"""loom-redis: model-free prompt throughput through 1, 2 and 4 `loom worker`s against the
in-process queue, the time from a worker's death to its prompt running elsewhere, and the
time from `/interrupt` to the interrupted prompt's history entry.

Throughput: one `loom serve` (with `--queue redis://...`: no local worker), N workers, a
real `redis-server` on loopback (AOF, `appendfsync everysec`, Redis' production default);
8 client threads POST `--prompts` model-free prompts (EmptyImage 8x8 -> ImageInvert ->
PreviewImage, a distinct colour each, so nothing is cached) and the clock stops when all
are in `/history`. The in-process row is `loom serve` alone (its own worker thread). The
difference per prompt is the Redis path's overhead (serialisation, Lua scripts, pub/sub,
one more process hop). On a 2-core machine 4 workers and the server share two cores, so
past 2 workers the figure shows contention, not scaling; on GPU machines each worker runs
on its own machine and prompts take seconds, so the queue's cost per prompt is what matters.

Workers import torch before they start (the warm-up prompt reaches only one of them, and
importing torch takes seconds on a loaded 2-core machine).

Death to rerun: 2 workers, a prompt holding in its node, its worker SIGKILLed; the time
until the other worker runs it. Expected: the lease (`lease_s`) plus up to ~1 s polling.

Mapping to many GPU machines (details in plugins/redis/README.md): one Redis 7 primary with
AOF; each prompt costs the queue ~10 commands plus its batched websocket events, so one
Redis core (~100k commands/s) serves hundreds of GPU workers whose prompts take seconds;
its memory is mostly history (prompt + UI workflow + output names per entry: ~200 MB for
10,000 entries of 20 KB). Servers and workers mount one shared folder for `output/`,
`temp/` (previews) and `input/` (uploads) at the same path; models stay on local disks.
Run at full scale later with `python bench/bench_redis_queue.py --prompts 1000 --repeat 3`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_http import prompt  # the same model-free prompt

ROOT = Path(__file__).resolve().parent.parent
NODES = ROOT / "tests" / "redis" / "chaos_nodes.py"  # the chaos test's model-free nodes
LAUNCH = "from loom.cli.main import main; raise SystemExit(main())"
#: Workers import torch before they start, so no worker's first prompt times the import (the
#: warm-up prompt reaches only one of them).
WORKER_LAUNCH = "import torch; " + LAUNCH
SKIPPED = 77


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, timeout_s: float = 120.0, poll_s: float = 0.01):
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(poll_s)
    return result


class Setup:
    """A base directory, optionally a redis-server, a server and workers."""

    def __init__(self, folder: Path, redis: bool, lease_s: float = 30.0) -> None:
        self.folder = folder
        self.base = folder / "base"
        (self.base / "custom_nodes").mkdir(parents=True)
        shutil.copy(NODES, self.base / "custom_nodes" / "chaos_nodes.py")
        self.env = {**os.environ, "LOOM_PLUGINS": "http,redis"}
        self.processes: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self.url = None
        if redis:
            port = free_port()
            self._spawn(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder),
                 "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
            )  # fmt: skip
            self.url = f"redis://127.0.0.1:{port}/0?lease_s={lease_s}"
        self.port = free_port()
        queue = ["--queue", self.url] if self.url else []
        self._spawn(self._loom("serve", "--port", str(self.port), *queue))
        wait_for(self._ready, 60)

    def _loom(self, *args: str, launch: str = LAUNCH) -> list[str]:
        return [sys.executable, "-c", launch, "--base-directory", str(self.base), *args]

    def _spawn(self, command: list[str]) -> subprocess.Popen:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env
        )
        self.processes.append(process)
        return process

    def _ready(self) -> bool:
        try:
            self.get("/prompt")
            return True
        except OSError:
            return False

    def add_workers(self, count: int) -> None:
        for _ in range(count):
            command = self._loom("worker", "--queue", self.url, launch=WORKER_LAUNCH)
            self.workers.append(self._spawn(command))

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as reply:
            return json.loads(reply.read() or b"null")

    def post(self, path: str, body: dict):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=json.dumps(body).encode()
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            text = reply.read()
        return json.loads(text) if text else None

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.kill()
                process.wait(10)


def throughput(folder: Path, workers: int | None, prompts: int) -> float:
    """Prompts per second from the first POST until all are in history."""
    setup = Setup(folder, redis=workers is not None)
    try:
        if workers:
            setup.add_workers(workers)
        warm = setup.post("/prompt", {"prompt": prompt(1)})["prompt_id"]
        wait_for(lambda: setup.get(f"/history/{warm}"), 120, 0.02)  # workers up and warm
        if workers:  # every worker ready before the clock starts
            wait_for(lambda: _advertised(setup) >= workers, 120, 0.05)
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(lambda n: setup.post("/prompt", {"prompt": prompt(n + 2)}), range(prompts))
            )
        wait_for(lambda: len(setup.get("/history")) >= prompts + 1, 600, 0.02)
        return prompts / (time.perf_counter() - started)
    finally:
        setup.close()


def _redis(setup: Setup):
    import redis

    return redis.Redis(port=int(setup.url.split(":")[2].split("/")[0]))


def _advertised(setup: Setup) -> int:
    return _redis(setup).hlen("loom:workers")


def _ready_workers(setup: Setup) -> int:
    """Live worker processes that advertise themselves (dead ones stay listed, stale)."""
    alive = {w.pid for w in setup.workers if w.poll() is None}
    states = [json.loads(v) for v in _redis(setup).hvals("loom:workers")]
    return len({state["pid"] for state in states} & alive)


def ping_ms(setup: Setup, count: int = 200) -> float:
    client = _redis(setup)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        client.ping()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def hold(tag: str) -> dict:
    return {"1": {"class_type": "ChaosWork", "inputs": {"tag": tag, "hold": True}}}


def death_to_rerun(folder: Path, lease_s: float, runs: int) -> tuple[list[float], list[float]]:
    """Seconds from SIGKILL to the rerun starting, and from /interrupt to history."""
    setup = Setup(folder, redis=True, lease_s=lease_s)
    chaos = setup.base / "output" / "chaos"
    reruns, interrupts = [], []
    try:
        setup.add_workers(2)
        wait_for(lambda: _ready_workers(setup) >= 2)
        print(f"Redis PING round trip on this machine: median {ping_ms(setup):.2f} ms.\n")
        for run in range(runs):
            tag = f"held{run}"
            setup.post("/prompt", {"prompt": hold(tag)})
            marker = chaos / "running" / tag
            victim = int(wait_for(lambda m=marker: m.exists() and m.read_text()))
            killed = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda m=marker, v=victim: m.exists() and m.read_text() not in ("", str(v)))
            reruns.append(time.perf_counter() - killed)
            (chaos / "release").mkdir(exist_ok=True)
            (chaos / "release" / tag).write_text("go")
            setup.workers = [w for w in setup.workers if w.poll() is None]
            setup.add_workers(2 - len(setup.workers))
            wait_for(lambda: _ready_workers(setup) >= 2)  # the replacement is up
        for run in range(runs):
            tag = f"stop{run}"
            prompt_id = setup.post("/prompt", {"prompt": hold(tag)})["prompt_id"]
            wait_for(lambda t=tag: (chaos / "running" / t).exists())
            asked = time.perf_counter()
            setup.post("/interrupt", {"prompt_id": prompt_id})
            wait_for(lambda p=prompt_id: setup.get(f"/history/{p}"))
            interrupts.append(time.perf_counter() - asked)
        return reruns, interrupts
    finally:
        setup.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2, help="throughput: best of N")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        print("redis-server is not installed", file=sys.stderr)
        raise SystemExit(SKIPPED)
    print(f"{args.prompts} model-free prompts from 8 client threads, best of {args.repeat}.\n")
    with tempfile.TemporaryDirectory() as tmp:
        reruns, interrupts = death_to_rerun(Path(tmp) / "death", 3.0, args.runs)

        def best(name: str, workers: int | None) -> float:
            folders = [Path(tmp) / f"{name}-{n}" for n in range(args.repeat)]
            return max(throughput(folder, workers, args.prompts) for folder in folders)

        base = best("inprocess", None)
        rows = [("in-process queue (`loom serve`)", base)]
        for count in [int(n) for n in args.workers.split(",")]:
            rate = best(f"redis{count}", count)
            rows.append((f"Redis, {count} worker{'s' if count > 1 else ''}", rate))
    print("| queue | prompts/s | ms per prompt | vs in-process |")
    print("|---|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:.0f} | {1000 / rate:.1f} | {1000 / rate - 1000 / base:+.1f} ms |")
    print()
    print(f"| event (lease_s=3, median of {args.runs}) | seconds | runs |")
    print("|---|---|---|")
    print(
        f"| worker SIGKILLed -> its prompt runs on another worker | {statistics.median(reruns):.2f} | "
        f"{', '.join(f'{s:.2f}' for s in reruns)} |"
    )
    print(
        f"| `/interrupt` -> interrupted prompt in history (other process) | "
        f"{statistics.median(interrupts):.3f} | {', '.join(f'{s:.3f}' for s in interrupts)} |"
    )


if __name__ == "__main__":
    main()
