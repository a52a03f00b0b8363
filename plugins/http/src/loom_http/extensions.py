"""The :class:`loom.types.WebServer` this server hands to other plugins.

``make_app`` builds one :class:`AppServer` per application and calls the
``web_server_started`` hook with it, so a plugin can add routes to the app before it starts,
send websocket messages from any thread, and rewrite ``POST /prompt`` bodies.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Callable
from typing import Any

from aiohttp import web

from loom_http.state import PROMPT_HANDLERS
from loom_http.ws import Hub

log = logging.getLogger(__name__)

PromptHandler = Callable[[dict[str, Any]], dict[str, Any]]


class AppServer:
    """One application and its websocket hub, as :class:`loom.types.WebServer`."""

    def __init__(self, app: web.Application, hub: Hub) -> None:
        self.app = app
        self.hub = hub
        app[PROMPT_HANDLERS] = []

    def send(self, kind: str, data: Any, client_id: str | None = None) -> None:
        loop = self.hub.loop
        if loop is None or loop.is_closed():
            log.debug("websocket message %s dropped: the server is not running", kind)
            return
        frame = _frame(kind, data)
        try:
            loop.call_soon_threadsafe(self._put, frame, client_id)
        except RuntimeError:  # the loop closed between the check and the call
            pass

    def _put(self, frame: str | bytes, client_id: str | None) -> None:
        if client_id is None:
            targets = list(self.hub.clients.values())
        else:
            client = self.hub.clients.get(client_id)
            targets = [client] if client is not None else []
        for client in targets:
            client.put(frame)

    def add_prompt_handler(self, handler: PromptHandler) -> None:
        self.app[PROMPT_HANDLERS].append(handler)


def _frame(kind: Any, data: Any) -> str | bytes:
    if isinstance(data, (bytes, bytearray)):
        return struct.pack(">I", int(kind)) + bytes(data)
    return json.dumps({"type": kind, "data": data}, default=str)


def apply_prompt_handlers(app: web.Application, body: dict[str, Any]) -> dict[str, Any]:
    """Run every registered prompt handler over a ``POST /prompt`` body, in order."""
    for handler in app.get(PROMPT_HANDLERS, ()):
        try:
            result = handler(body)
        except Exception:  # ComfyUI logs a failing handler and keeps the body
            log.exception("prompt handler %r raised; the prompt is queued unchanged", handler)
            continue
        if isinstance(result, dict):
            body = result
    return body
