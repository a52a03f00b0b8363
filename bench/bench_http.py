"""`loom serve` (loom-http): time to ready, and 50 websocket clients x 20 prompts each.

Time to ready: from process start until `GET /prompt` answers 200 (median of 3; ComfyUI
0.8.0 took 5.7 s on the reference machine; the issue asks < 1.5 s). Load: 50 concurrent
websocket clients each POST 20 model-free prompts (EmptyImage 8x8 -> ImageInvert ->
PreviewImage, a distinct colour per prompt so nothing is cached), one POST after the other
(so up to 50 POSTs are in flight), then wait for each prompt's `executing` None on their
own socket. Reports completed/lost prompts, p50/p99
`/prompt` latency and the server's RSS before the load (after one warm-up prompt) and after.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import psutil

CLIENTS = 50
PROMPTS_PER_CLIENT = 20
LAUNCH = "from loom.cli.main import main; raise SystemExit(main())"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(base: Path, port: int) -> tuple[subprocess.Popen, float]:
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "--base-directory", str(base), "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "LOOM_PLUGINS": "http"},
    )
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/prompt", timeout=1):
                return process, time.perf_counter() - started
        except OSError:
            if process.poll() is not None or time.perf_counter() - started > 60:
                raise SystemExit("loom serve did not start") from None
            time.sleep(0.01)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def prompt(color: int) -> dict:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }


async def one_client(
    session: aiohttp.ClientSession, base: str, index: int, latencies: list[float]
) -> int:
    sid = f"bench-{index}"
    async with session.ws_connect(f"ws://{base}/ws?clientId={sid}") as ws:
        await ws.receive(timeout=30)  # status

        async def post(n: int) -> str:
            started = time.perf_counter()
            async with session.post(
                f"http://{base}/prompt",
                json={"prompt": prompt(index * PROMPTS_PER_CLIENT + n + 1), "client_id": sid},
            ) as response:
                body = await response.json()
            latencies.append(time.perf_counter() - started)
            return body["prompt_id"]

        waiting = {
            await post(n) for n in range(PROMPTS_PER_CLIENT)
        }  # one after another, as a UI does
        done = 0
        while waiting:
            message = await ws.receive(timeout=120)
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if data["type"] == "executing" and data["data"].get("node") is None:
                if data["data"].get("prompt_id") in waiting:
                    waiting.discard(data["data"]["prompt_id"])
                    done += 1
        return done


async def load(base: str) -> tuple[int, list[float], float]:
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        counts = await asyncio.gather(
            *(one_client(session, base, i, latencies) for i in range(CLIENTS))
        )
        return sum(counts), latencies, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        readiness = []
        for _ in range(3):
            process, seconds = start(Path(tmp), free_port())
            readiness.append(seconds)
            stop(process)
        port = free_port()
        process, _ = start(Path(tmp), port)
        try:
            server = psutil.Process(process.pid)
            base = f"127.0.0.1:{port}"
            asyncio.run(_warm(base))  # the first run imports torch and PIL: not part of the load
            rss_warm = server.memory_info().rss
            completed, latencies, wall = asyncio.run(load(base))
            time.sleep(1.0)
            rss_after = server.memory_info().rss
            with urllib.request.urlopen(f"http://{base}/history") as response:
                history = json.loads(response.read())
        finally:
            stop(process)
    total = CLIENTS * PROMPTS_PER_CLIENT
    print("| metric | Loom | ComfyUI 0.8.0 anchor |")
    print("|---|---|---|")
    print(
        f"| `loom serve` time to ready (median of 3) | {statistics.median(readiness):.2f} s "
        f"(runs: {', '.join(f'{s:.2f}' for s in readiness)}) | 5.7 s |"
    )
    print(
        f"| prompts completed / queued ({CLIENTS} ws clients x {PROMPTS_PER_CLIENT}) | {completed} / {total} "
        f"(lost: {total - completed}) | |"
    )
    print(f"| history entries after the run | {len(history)} | |")
    print(
        f"| `/prompt` latency p50 / p99 | {percentile(latencies, 0.5) * 1000:.1f} ms / "
        f"{percentile(latencies, 0.99) * 1000:.1f} ms | |"
    )
    print(f"| wall time for the {total} prompts | {wall:.1f} s ({total / wall:.0f} prompts/s) | |")
    print(
        f"| server RSS before -> after | {rss_warm / 2**20:.0f} MB -> {rss_after / 2**20:.0f} MB "
        f"({(rss_after - rss_warm) / 2**20:+.0f} MB; budget 50 MB) | |"
    )
    if completed != total:
        raise SystemExit(f"lost {total - completed} prompts")


async def _warm(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://{base}/prompt", json={"prompt": prompt(0)}) as response:
            warm = (await response.json())["prompt_id"]
        while True:
            async with session.get(f"http://{base}/history/{warm}") as response:
                if await response.json():
                    return
            await asyncio.sleep(0.05)


if __name__ == "__main__":
    main()
