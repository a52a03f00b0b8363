"""What a web frontend plugin hands to the ``web_server_started`` hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class WebServer(Protocol):
    """What a web frontend plugin hands to ``web_server_started``: its app and its sockets."""

    #: The server's aiohttp ``web.Application`` (not started yet when the hook runs).
    app: Any

    def send(self, kind: str, data: Any, client_id: str | None = None) -> None:
        """Send one websocket message (``{"type": kind, "data": data}``; bytes data goes as
        a binary frame whose first 4 bytes are ``kind`` as an int) to ``client_id``, or to
        every client when it is None. Callable from any thread."""
        ...

    def add_prompt_handler(self, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Call ``handler(body)`` on every ``POST /prompt`` body before it is validated; the
        body it returns is used (ComfyUI's ``add_on_prompt_handler``)."""
        ...
