"""A real ``loom serve`` process on 127.0.0.1, driven by an independent client written like
ComfyUI's ``script_examples/websocket_api_example.py`` (urllib for HTTP, a websocket client
for progress): queue, follow the websocket until ``executing`` None, read ``/history``,
fetch every image from ``/view``."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import aiohttp
from http_helpers import image_prompt
from PIL import Image

LAUNCH = "from loom.cli.main import main; raise SystemExit(main())"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    base: Path,
    port: int,
    *extra: str,
    env: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, float]:
    """Start ``loom serve`` and wait until it answers; return the process and seconds to ready."""
    env = {**os.environ, "LOOM_PLUGINS": "http", **(env or {})}
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LAUNCH,
            "--base-directory",
            str(base),
            "serve",
            "--port",
            str(port),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"loom serve exited: {process.stdout.read().decode()}")
        try:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/prompt", headers=headers or {}
            )
            with urllib.request.urlopen(request, timeout=1) as response:
                if response.status == 200:
                    return process, time.perf_counter() - started
        except OSError:
            time.sleep(0.02)
    process.kill()
    raise AssertionError("loom serve did not become ready in 30 s")


# --- the client, as in ComfyUI's websocket_api_example.py -------------------------------------


class ComfyClient:
    def __init__(self, address: str) -> None:
        self.address = address
        self.client_id = str(uuid.uuid4())

    def queue_prompt(self, prompt: dict) -> dict:
        data = json.dumps({"prompt": prompt, "client_id": self.client_id}).encode("utf-8")
        request = urllib.request.Request(f"http://{self.address}/prompt", data=data)
        return json.loads(urllib.request.urlopen(request).read())

    def get_image(self, filename: str, subfolder: str, folder_type: str) -> bytes:
        query = urllib.parse.urlencode(
            {"filename": filename, "subfolder": subfolder, "type": folder_type}
        )
        with urllib.request.urlopen(f"http://{self.address}/view?{query}") as response:
            return response.read()

    def get_history(self, prompt_id: str) -> dict:
        with urllib.request.urlopen(f"http://{self.address}/history/{prompt_id}") as response:
            return json.loads(response.read())

    async def get_images(self, prompt: dict) -> tuple[dict[str, list[bytes]], list[str]]:
        seen: list[str] = []
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(
                f"ws://{self.address}/ws?clientId={self.client_id}"
            ) as ws:
                loop = asyncio.get_running_loop()
                prompt_id = (await loop.run_in_executor(None, self.queue_prompt, prompt))[
                    "prompt_id"
                ]
                while True:
                    out = await ws.receive(timeout=60)
                    if out.type == aiohttp.WSMsgType.TEXT:
                        message = json.loads(out.data)
                        seen.append(message["type"])
                        if message["type"] == "executing":
                            data = message["data"]
                            if data["node"] is None and data["prompt_id"] == prompt_id:
                                break  # execution is done
                    elif out.type != aiohttp.WSMsgType.BINARY:
                        raise AssertionError(f"websocket closed: {out}")
        history = self.get_history(prompt_id)[prompt_id]
        output_images: dict[str, list[bytes]] = {}
        for node_id, node_output in history["outputs"].items():
            output_images[node_id] = [
                self.get_image(i["filename"], i["subfolder"], i["type"])
                for i in node_output.get("images", [])
            ]
        return output_images, seen


def test_real_server_with_websocket_api_example_client(tmp_path):
    port = free_port()
    process, ready_s = start_server(tmp_path, port)
    try:
        print(f"loom serve ready after {ready_s:.2f} s")  # recorded in the benchmark, not asserted
        client = ComfyClient(f"127.0.0.1:{port}")
        images, seen = asyncio.run(client.get_images(image_prompt(size=32)))
        assert set(images) == {"3", "4"}
        for blobs in images.values():
            assert len(blobs) == 1 and blobs[0].startswith(b"\x89PNG\r\n\x1a\n")
        assert Image.open(io.BytesIO(images["4"][0])).size == (32, 32)
        assert seen[0] == "status" and "execution_success" in seen
        saved = list((tmp_path / "output").glob("loomtest_*.png"))
        assert len(saved) == 1
        assert "prompt" in Image.open(saved[0]).text  # the API prompt is in the PNG
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    assert process.returncode is not None


def test_real_server_token_from_environment(tmp_path):
    token = "tok-" + uuid.uuid4().hex
    port = free_port()
    process, _ = start_server(
        tmp_path, port, env={"LOOM_AUTH_TOKEN": token}, headers={"Authorization": f"Bearer {token}"}
    )
    try:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/prompt", timeout=5)
            status = 200
        except urllib.error.HTTPError as exc:
            status = exc.code
        assert status == 401
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_port_in_use_is_a_message_not_a_traceback(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        finished = subprocess.run(
            [
                sys.executable,
                "-c",
                LAUNCH,
                "--base-directory",
                str(tmp_path),
                "serve",
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "LOOM_PLUGINS": "http"},
            timeout=60,
        )
    assert finished.returncode == 1
    assert f"cannot listen on 127.0.0.1 port {port}: the port is in use" in finished.stderr
    assert "--port" in finished.stderr and "Traceback" not in finished.stderr


def test_bare_listen_binds_every_interface_as_in_comfyui():
    from loom_http.cli import serve

    def listen(*args: str) -> str:
        return serve.make_context("serve", list(args)).params["listen"]

    assert listen() == "127.0.0.1"
    assert listen("--listen") == "0.0.0.0"
    assert listen("--listen", "--port", "8190") == "0.0.0.0"  # not '--port' as the address
    assert listen("--listen", "::1") == "::1"


def test_listen_takes_several_addresses_separated_by_commas_as_in_comfyui(tmp_path):
    port = free_port()
    process, _ = start_server(tmp_path, port, "--listen", "127.0.0.1,127.0.0.2")
    try:
        for host in ("127.0.0.1", "127.0.0.2"):  # Linux routes all of 127/8 to loopback
            with urllib.request.urlopen(f"http://{host}:{port}/system_stats", timeout=5) as reply:
                assert reply.status == 200
    finally:
        process.terminate()
        process.wait(timeout=10)
    log = process.stdout.read().decode()
    assert f"ready at http://127.0.0.1:{port}, http://127.0.0.2:{port}" in log
    assert "reachable from the network" not in log  # both are loopback addresses
