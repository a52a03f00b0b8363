"""A real ``loom serve`` process on 127.0.0.1 with packs in ``custom_nodes/``: a pack's
routes on ``PromptServer.instance.routes``, its ``WEB_DIRECTORY`` under ``/extensions``,
``send_sync`` messages on the websocket, a prompt handler, and a V3 pack's preview."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

aiohttp = pytest.importorskip("aiohttp")
pytest.importorskip("loom_http")

from test_compat_v3 import V3_PACK  # noqa: E402

LAUNCH = "from loom.cli.main import main; raise SystemExit(main())"

SERVER_PACK = """
from aiohttp import web
from server import PromptServer

WEB_DIRECTORY = "./js"
SEEN = []


@PromptServer.instance.routes.get("/server_pack/ping")
async def ping(request):
    return web.json_response({"pong": request.query.get("x"), "seen": SEEN})


def remember(body):
    SEEN.append(sorted(body["prompt"]))
    return body


PromptServer.instance.add_on_prompt_handler(remember)


class Notify:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}, "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    def run(self, image, unique_id):
        server = PromptServer.instance
        server.send_sync("server_pack.to_client", {"node": unique_id}, server.client_id)
        server.send_sync("server_pack.to_all", {"node": unique_id})
        return (image,)


NODE_CLASS_MAPPINGS = {"Notify": Notify}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(base, write_pack):
    write_pack("server_pack", {"__init__.py": SERVER_PACK, "js/widget.js": "// the pack's UI\n"})
    write_pack("v3_pack", {"__init__.py": V3_PACK})
    port = free_port()
    env = {**os.environ, "LOOM_PLUGINS": "http,comfy-compat"}
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "--base-directory", str(base), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise AssertionError(f"loom serve exited: {process.stdout.read().decode()}")
        try:
            with urllib.request.urlopen(f"http://{address}/prompt", timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError("loom serve did not become ready in 60 s") from None
            time.sleep(0.05)
    yield address
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_pack_routes_web_directory_messages_and_v3_preview_under_loom_serve(server):
    assert get_json(f"http://{server}/server_pack/ping?x=1") == {"pong": "1", "seen": []}
    assert "/extensions/server_pack/widget.js" in get_json(f"http://{server}/extensions")
    with urllib.request.urlopen(f"http://{server}/extensions/server_pack/widget.js") as response:
        assert response.read() == b"// the pack's UI\n"
    info = get_json(f"http://{server}/object_info/V3Scale")["V3Scale"]
    assert info["python_module"] == "custom_nodes.v3_pack"

    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "Notify", "inputs": {"image": ["1", 0]}},
        "3": {
            "class_type": "V3Scale",
            "inputs": {"image": ["2", 0], "factor": 1.0, "mode": "invert"},
        },
        "4": {"class_type": "V3Show", "inputs": {"images": ["3", 0]}},
    }
    messages, prompt_id = asyncio.run(_queue_and_follow(server, prompt))
    kinds = [m["type"] for m in messages]
    assert {"type": "server_pack.to_client", "data": {"node": "2"}} in messages
    assert {"type": "server_pack.to_all", "data": {"node": "2"}} in messages
    assert kinds.index("server_pack.to_client") < kinds.index("executed")
    executed = next(m["data"] for m in messages if m["type"] == "executed")
    assert executed["node"] == "4" and executed["output"]["images"][0]["type"] == "temp"
    image = executed["output"]["images"][0]
    query = f"filename={image['filename']}&subfolder={image['subfolder']}&type=temp"
    with urllib.request.urlopen(f"http://{server}/view?{query}") as response:
        assert response.read(8) == b"\x89PNG\r\n\x1a\n"
    history = get_json(f"http://{server}/history/{prompt_id}")[prompt_id]
    assert history["status"]["status_str"] == "success"
    assert get_json(f"http://{server}/server_pack/ping")["seen"] == [["1", "2", "3", "4"]]


async def _queue_and_follow(address: str, prompt: dict) -> tuple[list[dict], str]:
    client_id = uuid.uuid4().hex
    messages: list[dict] = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"ws://{address}/ws?clientId={client_id}") as ws:
            async with session.post(
                f"http://{address}/prompt", json={"prompt": prompt, "client_id": client_id}
            ) as response:
                body = await response.json()
                assert response.status == 200, body
                prompt_id = body["prompt_id"]
            while True:
                message = await ws.receive(timeout=60)
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(message.data)
                messages.append(data)
                if data["type"] == "execution_error":
                    raise AssertionError(data)
                if (
                    data["type"] == "executing"
                    and data["data"].get("node") is None
                    and data["data"].get("prompt_id") == prompt_id
                ):
                    return messages, prompt_id
