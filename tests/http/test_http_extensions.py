"""Other plugins extend the server through ``web_server_started``: routes on the app,
websocket messages from any thread, ``POST /prompt`` handlers; ``web_server_stopped`` at
shutdown."""

from __future__ import annotations

import struct
import threading

import pytest
from aiohttp import web
from http_helpers import image_prompt, receive_until_done

import loom

pytestmark = pytest.mark.asyncio


class Extension:
    """A throwaway plugin using every part of the WebServer it is given."""

    def __init__(self) -> None:
        self.server = None
        self.stopped = []
        self.bodies = []

    @loom.hookimpl
    def web_server_started(self, server):
        self.server = server

        async def hello(request: web.Request) -> web.Response:
            return web.json_response({"hello": request.match_info["who"]})

        server.app.router.add_get("/ext/hello/{who}", hello)
        server.add_prompt_handler(self.tag_prompt)

    @loom.hookimpl
    def web_server_stopped(self, server):
        self.stopped.append(server)

    def tag_prompt(self, body):
        self.bodies.append(body)
        body.setdefault("extra_data", {})["tagged"] = True
        return body


@pytest.fixture
def extension(runtime):
    plugin = Extension()
    runtime.host.pm.register(plugin, name="test-extension")
    return plugin


async def test_hook_web_server_started(extension, make_client):
    client = await make_client()
    assert extension.server is not None and extension.server.app is client.server.app

    response = await client.get("/ext/hello/loom")
    assert await response.json() == {"hello": "loom"}

    ws = await client.ws_connect("/ws?clientId=abc")
    await ws.receive_json(timeout=5)  # status
    # Sent from a thread that is not the loop's, as a node's code would.
    sender = threading.Thread(
        target=lambda: (
            extension.server.send("ext.message", {"n": 1}, "abc"),
            extension.server.send("ext.broadcast", {"n": 2}),
            extension.server.send(3, b"raw"),
        )
    )
    sender.start()
    sender.join()
    assert await ws.receive_json(timeout=5) == {"type": "ext.message", "data": {"n": 1}}
    assert await ws.receive_json(timeout=5) == {"type": "ext.broadcast", "data": {"n": 2}}
    assert await ws.receive_bytes(timeout=5) == struct.pack(">I", 3) + b"raw"

    response = await client.post("/prompt", json={"prompt": image_prompt(), "client_id": "abc"})
    assert response.status == 200
    prompt_id = (await response.json())["prompt_id"]
    await receive_until_done(ws, prompt_id)
    assert extension.bodies and extension.bodies[0]["extra_data"] == {"tagged": True}
    await ws.close()


async def test_hook_web_server_stopped(extension, make_client):
    client = await make_client()
    server = extension.server
    await client.close()
    assert extension.stopped == [server]
