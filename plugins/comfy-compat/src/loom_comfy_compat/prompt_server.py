"""``server.PromptServer.instance``: ComfyUI's server object, backed by loom-http when
``loom serve`` runs and headless (messages go to the log) under ``loom run``.

Packs declare routes at import with ``@PromptServer.instance.routes.get(...)``; every route
declared is added to each web app the plugin is attached to (``web_server_started``), also
when it is declared after attaching, as long as that app has not started.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from loom.events import ExecutionEvent
    from loom.types import WebServer

log = logging.getLogger(__name__)

PromptHandler = Callable[[dict[str, Any]], dict[str, Any]]


class BinaryEventTypes:
    """Binary websocket frame kinds (the first 4 bytes of the frame)."""

    PREVIEW_IMAGE = 1
    UNENCODED_PREVIEW_IMAGE = 2
    TEXT = 3
    PREVIEW_IMAGE_WITH_METADATA = 4


class LiveRouteTable(web.RouteTableDef):
    """A RouteTableDef whose routes also go straight into the apps it is mounted on."""

    def __init__(self) -> None:
        super().__init__()
        self._apps: list[web.Application] = []

    def route(self, method: str, path: str, **kwargs: Any) -> Callable[[Any], Any]:
        declare = super().route(method, path, **kwargs)

        def decorate(handler: Any) -> Any:
            result = declare(handler)
            self._add_last()
            return result

        return decorate

    def static(self, prefix: str, path: Any, **kwargs: Any) -> None:
        super().static(prefix, path, **kwargs)
        self._add_last()

    def _add_last(self) -> None:
        definition = list(self)[-1]
        for app in self._apps:
            if app.frozen:
                log.warning("route %s declared after the server started; not added", definition)
            else:
                definition.register(app.router)

    def mount(self, app: web.Application) -> None:
        app.router.add_routes(self)
        self._apps.append(app)

    def unmount(self, app: web.Application) -> None:
        if app in self._apps:
            self._apps.remove(app)


class PromptServer:
    """The one server object packs see; ``PromptServer.instance`` always exists."""

    instance: PromptServer

    def __init__(self) -> None:
        self.routes = LiveRouteTable()
        #: The attached server's aiohttp app; headless, an app that is never served.
        self.app: web.Application = web.Application()
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.last_prompt_id: str | None = None
        self.number = 0
        self.loop: Any = None
        self.supports = ["custom_nodes_from_web"]
        self.prompt_handlers: list[PromptHandler] = []
        self._server: WebServer | None = None

    @property
    def headless(self) -> bool:
        return self._server is None

    def send_sync(self, event: Any, data: Any, sid: str | None = None) -> None:
        """Send a websocket message to ``sid`` (every client when None); any thread."""
        server = self._server
        if server is None:
            log.info("PromptServer message %s (headless): %.200r", event, data)
            return
        server.send(event, data, sid)

    async def send(self, event: Any, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    async def send_json(self, event: Any, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    def add_on_prompt_handler(self, handler: PromptHandler) -> None:
        """``handler(json_body) -> json_body`` runs on every ``POST /prompt``."""
        self.prompt_handlers.append(handler)
        if self._server is not None:
            self._server.add_prompt_handler(handler)

    def attach(self, server: WebServer) -> None:
        self._server = server
        self.app = server.app
        self.routes.mount(server.app)
        for handler in self.prompt_handlers:
            server.add_prompt_handler(handler)

    def detach(self, server: WebServer) -> None:
        self.routes.unmount(server.app)
        if self._server is server:
            self._server = None
            self.app = web.Application()

    def observe(self, event: ExecutionEvent) -> None:
        if event.type == "execution_start":
            self.client_id = event.client_id
            self.last_prompt_id = event.data.get("prompt_id")
        elif event.type == "executing":
            self.last_node_id = event.data.get("node")


PromptServer.instance = PromptServer()


def attach(server: WebServer) -> None:
    PromptServer.instance.attach(server)


def detach(server: WebServer) -> None:
    PromptServer.instance.detach(server)


def observe(event: ExecutionEvent) -> None:
    PromptServer.instance.observe(event)
