"""Route tables and the request helpers every route module shares.

ComfyUI serves each API route twice, as ``/x`` and ``/api/x``; :class:`Routes` records a
route once and registers both forms (``prefixed_only`` for ``/api/jobs``, ``bare_only``
for ``/internal/*``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@attrs.define
class Routes:
    """A list of (method, path, handler) registered under ``/path`` and/or ``/api/path``."""

    entries: list[tuple[str, str, Handler, bool, bool]] = attrs.field(factory=list)

    def route(
        self, method: str, path: str, *, bare: bool = True, prefixed: bool = True
    ) -> Callable[[Handler], Handler]:
        def decorate(handler: Handler) -> Handler:
            self.entries.append((method, path, handler, bare, prefixed))
            return handler

        return decorate

    def get(self, path: str, **kwargs: bool) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **kwargs)

    def post(self, path: str, **kwargs: bool) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: bool) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **kwargs)

    def patch(self, path: str, **kwargs: bool) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **kwargs)

    def register(self, app: web.Application) -> None:
        for method, path, handler, bare, prefixed in self.entries:
            if bare:
                app.router.add_route(method, path, handler)
            if prefixed:
                app.router.add_route(method, "/api" + path, handler)


def json_response(data: Any, status: int = 200) -> web.Response:
    """``application/json; charset=utf-8`` as ComfyUI sends it."""
    return web.Response(
        text=json.dumps(data), status=status, content_type="application/json", charset="utf-8"
    )


def error_response(message: str, status: int = 400) -> web.Response:
    """``{"error": message}`` with ``status`` (the shape /api/jobs and userdata use)."""
    return json_response({"error": message}, status)


def error_body(kind: str, message: str, details: str = "") -> dict[str, Any]:
    """ComfyUI's error object, which its clients read ``error.type`` / ``error.message`` from."""
    return {
        "error": {"type": kind, "message": message, "details": details, "extra_info": {}},
        "node_errors": {},
    }


class BadRequest(web.HTTPBadRequest):
    """A 400 with ComfyUI's error object (raised from helpers)."""

    def __init__(self, message: str, kind: str = "invalid_request") -> None:
        super().__init__(
            text=json.dumps(error_body(kind, message)), content_type="application/json"
        )
        self.message = message


async def read_json(
    request: web.Request, *, allow_empty: bool = False, kind: type | None = None
) -> Any:
    """The request body as JSON; malformed JSON (or the wrong top-level type) is a 400."""
    raw = await request.read()
    if not raw.strip():
        if allow_empty:
            return None
        raise BadRequest("request body is empty; expected JSON", "invalid_json")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"malformed JSON body: {exc}", "invalid_json") from exc
    if kind is not None and not isinstance(data, kind):
        raise BadRequest(
            f"expected a JSON {_kind_name(kind)}, got {type(data).__name__}", "invalid_json"
        )
    return data


def _kind_name(kind: type) -> str:
    return {dict: "object", list: "array", str: "string"}.get(kind, kind.__name__)


def truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


__all__ = ["BadRequest", "Routes", "error_response", "json_response", "read_json", "truthy"]
