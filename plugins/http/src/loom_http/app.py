"""The aiohttp application: :func:`make_app` wires the runtime, the prompt worker, the
websocket hub, the security middlewares, every API route and (last) the frontend.

State lives in typed :class:`aiohttp.web.AppKey` slots; the prompt worker and the event
forwarder are started and stopped by a ``cleanup_ctx``; websockets are closed on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from loom_http import frontend, security
from loom_http.extensions import AppServer
from loom_http.logbuffer import LogBuffer
from loom_http.routes import (
    execution,
    files,
    jobs,
    metrics,
    nodes_models,
    queue_history,
    templates,
    users,
)
from loom_http.state import HUB, LOGS, OPTIONS, RUNTIME, SERVER, SERVICE, ServerOptions
from loom_http.ws import Hub, websocket_handler

if TYPE_CHECKING:
    from loom.frontend import Runtime

log = logging.getLogger(__name__)

__all__ = ["ServerOptions", "make_app"]


def make_app(runtime: Runtime, options: ServerOptions | None = None) -> web.Application:
    """Build the ComfyUI-compatible application for ``runtime``."""
    from loom.frontend import PromptService

    options = options or ServerOptions()
    app = web.Application(
        client_max_size=options.max_upload_size_bytes,
        middlewares=security.middlewares(options),
    )
    app[RUNTIME] = runtime
    app[OPTIONS] = options
    app[HUB] = hub = Hub(runtime, options)
    app[SERVICE] = PromptService(runtime)
    app[LOGS] = LogBuffer()
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_close_websockets)
    app.on_response_prepare.append(security.cache_headers)

    for path in ("/ws", "/api/ws"):
        app.router.add_get(path, websocket_handler)
    for module in (execution, queue_history, jobs, files, nodes_models, users, templates, metrics):
        module.routes.register(app)
    app[SERVER] = server = AppServer(app, hub)
    runtime.host.hook.web_server_started(server=server)
    # Custom-node packages are imported before the app freezes, so the routes they declare
    # and their WEB_DIRECTORY are served.
    _ = runtime.registry
    frontend.register(app, options)  # last: API routes win over static files
    hub.service = app[SERVICE]
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    service = app[SERVICE]
    hub = app[HUB]
    loop = asyncio.get_running_loop()
    hub.attach(loop)
    root_logger = logging.getLogger()
    root_logger.addHandler(app[LOGS])
    # make_app already built the registry (custom nodes' routes must exist before the app
    # freezes), so this returns the cached one; kept off the loop all the same.
    await loop.run_in_executor(None, lambda: runtime.registry)  # type: ignore[attr-defined]
    runtime.queue.on_remote_event(hub.publish)  # events of prompts run by `loom worker`s
    if app[OPTIONS].start_worker and runtime.queue.runs_in_process:
        service.start()  # type: ignore[attr-defined]
    try:
        yield
    finally:
        await loop.run_in_executor(None, service.stop)  # type: ignore[attr-defined]
        runtime.host.hook.web_server_stopped(server=app[SERVER])
        hub.detach()
        root_logger.removeHandler(app[LOGS])


async def _close_websockets(app: web.Application) -> None:
    await app[HUB].close_all()
