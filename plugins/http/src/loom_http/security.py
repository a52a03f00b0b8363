"""Security: bearer-token auth, ComfyUI's origin check or CORS, cache headers, error
mapping, and path confinement for every file name a client can send.

Path rules (:func:`check_name`, :func:`confine`): names with ``..`` components, absolute
paths, backslashes, NUL bytes or percent-encoded separators (a name that still holds
``%2F`` after the URL was decoded was encoded twice) are rejected with 400; a path that
resolves outside its folder (through a subfolder or a symlink) with 403.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import json
import logging
import os
import re
import socket
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from loom.errors import LoomError
from loom.paths import PathOutsideError
from loom.paths import confine as loom_confine
from loom_http.routes import error_body

if TYPE_CHECKING:
    from loom_http.state import ServerOptions

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TOKEN_COOKIE = "loom_token"
IMAGE_EXTENSIONS = (
    ".jpeg",
    ".jpg",
    ".png",
    ".ico",
    ".gif",
    ".svg",
    ".tif",
    ".tiff",
    ".webp",
    ".bmp",
    ".avif",
)
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|2e|00)", re.IGNORECASE)


class PathRejected(web.HTTPBadRequest):
    """A client-named path is malformed (400, JSON ``{"error": ...}``)."""

    def __init__(self, message: str) -> None:
        super().__init__(text=json.dumps({"error": message}), content_type="application/json")


class PathForbidden(web.HTTPForbidden):
    """A client-named path resolves outside its folder (403)."""

    def __init__(self, message: str) -> None:
        super().__init__(text=json.dumps({"error": message}), content_type="application/json")


def check_name(name: str, *, allow_subdirs: bool = True, what: str = "path") -> str:
    """Return ``name`` if it is a safe relative path, else raise :class:`PathRejected`."""
    if "\x00" in name:
        raise PathRejected(f"invalid {what}: NUL byte")
    if "\\" in name or _ENCODED_SEPARATOR.search(name):
        raise PathRejected(f"invalid {what}: backslash or encoded separator in {name!r}")
    if name.startswith("/") or os.path.isabs(name) or re.match(r"^[A-Za-z]:", name):
        raise PathRejected(f"invalid {what}: absolute paths are not allowed ({name!r})")
    parts = name.split("/")
    if ".." in parts:
        raise PathRejected(f"invalid {what}: '..' is not allowed ({name!r})")
    if not allow_subdirs and len([p for p in parts if p]) > 1:
        raise PathRejected(f"invalid {what}: sub-directories are not allowed ({name!r})")
    return name


def confine(base: Path, *relative: str) -> Path:
    """``base / relative...`` after :func:`check_name`; 403 if it resolves outside ``base``.

    Symlinks are resolved on both sides, so a link inside the folder that points out is
    refused, while a base folder that is itself a symlink works.
    """
    for part in relative:
        check_name(part)
    try:
        return loom_confine(base, *relative)
    except PathOutsideError as exc:
        raise PathForbidden("path is outside the allowed folder") from exc


# --- middlewares ---------------------------------------------------------------------------


def middlewares(options: ServerOptions) -> list:
    """Outermost first: origin check or CORS, auth, error mapping."""
    stack = [cors_middleware(options.cors_origin) if options.cors_origin else origin_middleware]
    if options.auth_token:
        stack.append(auth_middleware(options.auth_token))
    stack.append(error_middleware)
    return stack


def _token_from(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query.get("token") or request.cookies.get(TOKEN_COOKIE)


def auth_middleware(token: str) -> Callable:
    """Every request needs the token: ``Authorization: Bearer``, ``?token=`` or the cookie.

    A valid ``?token=`` sets an HttpOnly cookie, so a browser opened at ``/?token=...``
    can load the frontend, call the API and open the websocket without headers.
    """
    expected = token.encode()

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = _token_from(request)
        if given is None or not hmac.compare_digest(given.encode(), expected):
            return web.json_response(
                {"error": "unauthorized: a valid bearer token is required"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        response = await handler(request)
        if request.query.get("token") and not response.prepared:
            response.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="Strict")
        return response

    return check_token


@functools.lru_cache(maxsize=256)
def is_loopback(host: str | None) -> bool:
    """True for loopback addresses and names that resolve only to loopback (as ComfyUI)."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    if host == "localhost":
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def origin_mismatch(host_header: str, origin_header: str) -> bool:
    """ComfyUI's rule: a loopback Host whose host[:port] differs from the Origin's."""
    host_domain = host_header.lower()
    parsed = urllib.parse.urlparse(origin_header)
    origin_domain: str | None = parsed.netloc.lower()
    host_parsed = urllib.parse.urlsplit("//" + host_domain)
    loopback = is_loopback(host_parsed.hostname)
    try:
        origin_port, host_port = parsed.port, host_parsed.port
    except ValueError:
        return True
    if origin_port is None:
        host_domain = host_parsed.hostname or ""
    if host_port is None:
        origin_domain = parsed.hostname
    return bool(loopback and host_domain and origin_domain and host_domain != origin_domain)


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    host, origin = request.headers.get("Host"), request.headers.get("Origin")
    if host is not None and origin is not None and origin_mismatch(host, origin):
        log.warning(
            "request with non-matching host and origin %s != %s, returning 403", host, origin
        )
        return web.Response(status=403)
    if request.method == "OPTIONS":
        return web.Response()
    return await handler(request)


def cors_middleware(allowed_origin: str) -> Callable:
    headers = {
        "Access-Control-Allow-Origin": allowed_origin,
        "Access-Control-Allow-Methods": "POST, GET, DELETE, PUT, OPTIONS, PATCH",
        "Access-Control-Allow-Headers": "Content-Type, Authorization",
        "Access-Control-Allow-Credentials": "true",
    }

    @web.middleware
    async def add_cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS":
            response: web.StreamResponse = web.Response()
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                exc.headers.update(headers)
                raise
        if not response.prepared:
            response.headers.update(headers)
        return response

    return add_cors


async def cache_headers(request: web.Request, response: web.StreamResponse) -> None:
    """ComfyUI's cache headers (an ``on_response_prepare`` signal: the final status is known)."""
    path = request.path
    if "Cache-Control" in response.headers:
        return
    if path.endswith((".js", ".css", "index.json")):
        response.headers["Cache-Control"] = "no-cache"
    elif path.lower().endswith(IMAGE_EXTENSIONS):
        if response.status == 200:
            response.headers["Cache-Control"] = "public, max-age=86400"
        elif response.status == 404:
            response.headers["Cache-Control"] = "public, max-age=3600"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A :class:`LoomError` becomes a 400 with its message; anything else a logged 500."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except LoomError as exc:
        return web.json_response(error_body(type(exc).__name__, str(exc)), status=400)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return web.json_response(
            error_body("server_error", "internal server error (see the server log)"), status=500
        )
