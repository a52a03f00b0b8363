"""Real processes for the loom-redis tests: a ``redis-server``, ``loom serve --queue`` and ``loom worker``
subprocesses sharing one base directory (models, custom_nodes, output) and one Redis, a
urllib client of the server's ComfyUI API, and waiting on state with bounded timeouts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis

HERE = Path(__file__).resolve().parent
REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A redis-server process on 127.0.0.1 with AOF (``appendfsync always``) in ``folder``;
    :meth:`restart` kills it with SIGKILL and starts it again on the same port and files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", str(self.folder),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
                "--protected-mode", "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


LAUNCH = "from loom.cli.main import main; raise SystemExit(main())"
T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], timeout_s: float = 60.0, poll_s: float = 0.02) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(poll_s)


class Cluster:
    """One base directory, one server, any number of workers (respawned by :meth:`heal`)."""

    def __init__(self, base: Path, queue_url: str) -> None:
        self.base = base
        self.queue_url = queue_url
        (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
        shutil.copy(HERE / "chaos_nodes.py", base / "custom_nodes" / "chaos_nodes.py")
        self.env = {**os.environ, "LOOM_PLUGINS": "http,redis", "PYTHONUNBUFFERED": "1"}
        self.server: subprocess.Popen | None = None
        self.port = 0
        self.workers: list[subprocess.Popen] = []
        self.logs = base / "logs"
        self.logs.mkdir(exist_ok=True)

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        return subprocess.Popen(
            [sys.executable, "-c", LAUNCH, "--base-directory", str(self.base), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )

    def start_server(self) -> None:
        self.port = free_port()
        self.server = self._spawn(
            "server", "serve", "--port", str(self.port), "--queue", self.queue_url
        )
        wait_for("the server to answer", self._server_ready, timeout_s=60)

    def _server_ready(self) -> bool:
        assert self.server is not None and self.server.poll() is None, "loom serve exited"
        try:
            self.get("/prompt")
            return True
        except OSError:
            return False

    def start_worker(self) -> subprocess.Popen:
        worker = self._spawn(f"worker-{len(self.workers)}", "worker", "--queue", self.queue_url)
        self.workers.append(worker)
        return worker

    def log_of(self, worker: subprocess.Popen) -> str:
        return (self.logs / f"worker-{self.workers.index(worker)}.log").read_text()

    def alive_workers(self) -> list[subprocess.Popen]:
        return [w for w in self.workers if w.poll() is None]

    def heal(self, count: int) -> None:
        """Start workers until ``count`` are alive (a supervisor's restart policy)."""
        for _ in range(count - len(self.alive_workers())):
            self.start_worker()

    def stop(self) -> None:
        for process in [*self.workers, self.server]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(10)

    # -- the ComfyUI API ---------------------------------------------------------------------

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as response:
            return json.loads(response.read() or b"null")

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else None

    def queue_prompt(self, prompt: dict[str, Any], client_id: str, **body: Any) -> str:
        answer = self.post("/prompt", {"prompt": prompt, "client_id": client_id, **body})
        return answer["prompt_id"]

    # -- what the nodes wrote ------------------------------------------------------------------

    def chaos(self, *parts: str) -> Path:
        return self.base / "output" / "chaos" / Path(*parts)

    def running_pid(self, tag: str) -> int | None:
        marker = self.chaos("running", tag)
        text = marker.read_text() if marker.exists() else ""
        return int(text) if text else None

    def runs_of(self, tag: str) -> list[Path]:
        folder = self.chaos("runs")
        return sorted(folder.glob(f"{tag}.*")) if folder.exists() else []

    def release(self, tag: str) -> None:
        self.chaos("release").mkdir(parents=True, exist_ok=True)
        self.chaos("release", tag).write_text("go")


def work(tag: str, hold: bool = False) -> dict[str, Any]:
    return {"1": {"class_type": "ChaosWork", "inputs": {"tag": tag, "hold": hold}}}


def poison(tag: str) -> dict[str, Any]:
    return {"1": {"class_type": "ChaosPoison", "inputs": {"tag": tag}}}
