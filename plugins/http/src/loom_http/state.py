"""Server options and the typed application state every route module reads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from aiohttp import web

if TYPE_CHECKING:
    from loom.frontend import PromptService, Runtime
    from loom_http.ws import Hub

MB = 1024 * 1024
PREVIEW_METHODS = ("none", "auto", "latent2rgb", "taesd")


@attrs.frozen
class ServerOptions:
    """What ``loom serve``'s flags configure (ComfyUI's names and defaults)."""

    listen: str = "127.0.0.1"
    port: int = 8188
    #: None: ComfyUI's origin check; else the ``Access-Control-Allow-Origin`` value.
    cors_origin: str | None = None
    max_upload_size_mb: float = 100.0
    auth_token: str | None = None
    front_end_root: Path | None = None
    preview_method: str = attrs.field(
        default="none", validator=attrs.validators.in_(PREVIEW_METHODS)
    )
    #: Start the prompt worker thread with the app (tests may drive the service by hand).
    start_worker: bool = True

    @property
    def max_upload_size_bytes(self) -> int:
        return int(self.max_upload_size_mb * MB)


RUNTIME: web.AppKey[Any] = web.AppKey("runtime", object)
OPTIONS = web.AppKey("options", ServerOptions)
SERVICE: web.AppKey[Any] = web.AppKey("service", object)
HUB: web.AppKey[Any] = web.AppKey("hub", object)
LOGS: web.AppKey[Any] = web.AppKey("logs", object)
#: ``POST /prompt`` body rewriters other plugins added through ``WebServer.add_prompt_handler``.
PROMPT_HANDLERS: web.AppKey[Any] = web.AppKey("prompt_handlers", object)
#: The :class:`loom_http.extensions.AppServer` handed to ``web_server_started``.
SERVER: web.AppKey[Any] = web.AppKey("server", object)


def runtime_of(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


def service_of(request: web.Request) -> PromptService:
    return request.app[SERVICE]


def hub_of(request: web.Request) -> Hub:
    return request.app[HUB]


def options_of(request: web.Request) -> ServerOptions:
    return request.app[OPTIONS]
