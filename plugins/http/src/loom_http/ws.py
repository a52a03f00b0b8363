"""The websocket hub: ComfyUI's ``/ws`` protocol.

Execution events arrive on the prompt worker's thread (through :class:`EventForwarder`,
registered on the runtime's plugin manager) and are handed to the aiohttp loop with
``call_soon_threadsafe``. Routing follows ComfyUI: ``status`` and
``execution_interrupted`` go to every socket; everything else only to the socket whose
sid is the prompt's ``client_id``; with no ``client_id``, only ``progress``,
``progress_state`` and legacy previews are sent (to everyone). Each socket has its own
outgoing queue and writer task, so messages keep their order and a slow client never
blocks the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import uuid
from typing import TYPE_CHECKING, Any

import attrs
from aiohttp import WSMsgType, web

import loom
from loom.events import BROADCAST_TYPES, ExecutionEvent, Preview
from loom.frontend import execution_error_report
from loom_http.state import hub_of

if TYPE_CHECKING:
    from loom.frontend import Runtime
    from loom_http.state import ServerOptions

log = logging.getLogger(__name__)

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
IMAGE_TYPES = {"JPEG": 1, "PNG": 2}
#: Messages kept per socket before a client that stopped reading is dropped.
MAX_BACKLOG = 100_000
NO_CLIENT_TYPES = frozenset({"progress", "progress_state"})


def server_feature_flags(options: ServerOptions) -> dict[str, Any]:
    """What ``/features`` and the ws handshake announce."""
    return {
        "supports_preview_metadata": True,
        "max_upload_size": options.max_upload_size_bytes,
        "extension": {"manager": {"supports_v4": True}},
    }


def encode_preview(preview: Preview, with_metadata: bool) -> bytes:
    """A binary preview frame: event 4 (JSON metadata + image) or legacy event 1."""
    image_type = "image/png" if preview.image_format.upper() == "PNG" else "image/jpeg"
    if with_metadata:
        meta = json.dumps(
            {
                "node_id": preview.node_id,
                "prompt_id": preview.prompt_id,
                "display_node_id": preview.display_node_id or preview.node_id,
                "parent_node_id": preview.parent_node_id,
                "real_node_id": preview.real_node_id or preview.node_id,
                "image_type": image_type,
            }
        ).encode()
        return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(meta)) + meta + preview.data
    return (
        struct.pack(">II", PREVIEW_IMAGE, IMAGE_TYPES.get(preview.image_format.upper(), 1))
        + preview.data
    )


@attrs.define(eq=False)
class Client:
    """One connected socket: its sid, announced feature flags and outgoing queue."""

    sid: str
    ws: web.WebSocketResponse
    flags: dict[str, Any] = attrs.field(factory=dict)
    outbox: asyncio.Queue = attrs.field(factory=asyncio.Queue)
    writer: asyncio.Task | None = None

    def put(self, frame: str | bytes) -> None:
        if self.outbox.qsize() >= MAX_BACKLOG:
            log.warning("websocket client %s is not reading; dropping it", self.sid)
            if self.writer is not None:
                self.writer.cancel()
            return
        self.outbox.put_nowait(frame)

    async def write(self) -> None:
        while True:
            frame = await self.outbox.get()
            try:
                if isinstance(frame, bytes):
                    await self.ws.send_bytes(frame)
                else:
                    await self.ws.send_str(frame)
            except (ConnectionError, RuntimeError):  # closed underneath us
                return


class EventForwarder:
    """A plugin object registered on one runtime's plugin manager: events -> its hub."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._started: dict[str, int] = {}  # prompt id -> execution_start timestamp (ms)

    @loom.hookimpl
    def on_execution_event(self, event: ExecutionEvent) -> None:
        self._log(event)
        self.hub.publish(event)

    def _log(self, event: ExecutionEvent) -> None:
        """The server console says how each prompt ended, as ComfyUI's does."""
        data = event.data if isinstance(event.data, dict) else {}
        prompt_id = str(data.get("prompt_id"))
        if event.type == "execution_start":
            self._started[prompt_id] = data.get("timestamp", 0)
        elif event.type == "execution_success":
            started = self._started.pop(prompt_id, None)
            took = f" in {(data.get('timestamp', 0) - started) / 1000:.2f} s" if started else ""
            log.info("prompt %s executed%s", prompt_id, took)
        elif event.type == "execution_error":
            self._started.pop(prompt_id, None)
            log.error(
                "prompt %s failed: %s",
                prompt_id,
                execution_error_report(data).removeprefix("error: "),
            )
            log.debug("traceback of prompt %s:\n%s", prompt_id, "".join(data.get("traceback", [])))
        elif event.type == "execution_interrupted":
            self._started.pop(prompt_id, None)
            log.info("prompt %s interrupted", prompt_id)


class Hub:
    """All sockets of one server, and the routing of execution events to them."""

    def __init__(self, runtime: Runtime, options: ServerOptions) -> None:
        self.runtime = runtime
        self.options = options
        self.clients: dict[str, Client] = {}
        self.running: dict[str, dict[str, Any]] = {}  # sid -> last executing data
        self.loop: asyncio.AbstractEventLoop | None = None
        self.service: Any = None
        self._forwarder = EventForwarder(self)
        self._plugin_name = f"loom_http.hub.{id(self):x}"

    # -- lifecycle -----------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        pm = self.runtime.host.pm
        if pm.get_plugin(self._plugin_name) is None:
            pm.register(self._forwarder, name=self._plugin_name)

    def detach(self) -> None:
        pm = self.runtime.host.pm
        if pm.get_plugin(self._plugin_name) is not None:
            pm.unregister(name=self._plugin_name)
        self.loop = None

    async def close_all(self) -> None:
        for client in list(self.clients.values()):
            await client.ws.close(code=1001, message=b"server shutdown")

    # -- events (any thread) ---------------------------------------------------------------

    def publish(self, event: ExecutionEvent) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self.dispatch, event)
        except RuntimeError:  # loop closed between the check and the call
            pass

    def dispatch(self, event: ExecutionEvent) -> None:
        """Route one event (on the loop)."""
        if event.type == "executing" and event.client_id is not None:
            if event.data.get("node") is None:
                self.running.pop(event.client_id, None)
            else:
                self.running[event.client_id] = event.data
        targets = self._targets(event)
        if not targets:
            return
        text = json.dumps({"type": event.type, "data": event.data}, default=str)
        for client in targets:
            if event.preview is not None:
                legacy = event.client_id is None or not client.flags.get(
                    "supports_preview_metadata"
                )
                client.put(encode_preview(event.preview, with_metadata=not legacy))
            client.put(text)

    def _targets(self, event: ExecutionEvent) -> list[Client]:
        if event.type in BROADCAST_TYPES:
            return list(self.clients.values())
        if event.client_id is None:
            return list(self.clients.values()) if event.type in NO_CLIENT_TYPES else []
        client = self.clients.get(event.client_id)
        return [client] if client is not None else []

    def send(self, sid: str, kind: str, data: dict[str, Any]) -> None:
        client = self.clients.get(sid)
        if client is not None:
            client.put(json.dumps({"type": kind, "data": data}, default=str))

    def queue_remaining(self) -> int:
        return self.runtime.queue.remaining()

    # -- connections ---------------------------------------------------------------------------

    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=self.options.max_upload_size_bytes)
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        old = self.clients.get(sid)
        client = Client(sid, ws)
        self.clients[sid] = client
        if old is not None:
            await old.ws.close(code=1000, message=b"replaced by a new connection")
        client.writer = asyncio.create_task(client.write())
        try:
            client.put(
                json.dumps(
                    {
                        "type": "status",
                        "data": {
                            "status": {"exec_info": {"queue_remaining": self.queue_remaining()}},
                            "sid": sid,
                        },
                    }
                )
            )
            if sid in self.running:
                node = self.running[sid]
                client.put(
                    json.dumps(
                        {
                            "type": "executing",
                            "data": {
                                "node": node.get("display_node", node.get("node")),
                                "prompt_id": node.get("prompt_id"),
                            },
                        }
                    )
                )
            await self._read(client)
        finally:
            if self.clients.get(sid) is client:
                del self.clients[sid]
            client.writer.cancel()
        return ws

    async def _read(self, client: Client) -> None:
        first = True
        async for message in client.ws:
            if message.type == WSMsgType.TEXT:
                if first:
                    self._handshake(client, message.data)
                first = False
            elif message.type == WSMsgType.ERROR:
                log.debug("websocket %s closed with %s", client.sid, client.ws.exception())

    def _handshake(self, client: Client, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            return
        if isinstance(message, dict) and message.get("type") == "feature_flags":
            data = message.get("data")
            client.flags = dict(data) if isinstance(data, dict) else {}
            client.put(
                json.dumps({"type": "feature_flags", "data": server_feature_flags(self.options)})
            )


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    return await hub_of(request).serve(request)
