"""Users, settings and per-user files (``/users``, ``/settings``, ``/userdata``,
``/v2/userdata``), stored under ``<user_dir>/<user_id>/`` as ComfyUI does.

Single-user: every request is user ``default``. ``{file}`` in ``/userdata/{file}`` is one
URL segment whose sub-paths arrive percent-encoded (``workflows%2Fa.json``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from loom_http.routes import BadRequest, Routes, error_response, json_response, read_json, truthy
from loom_http.security import PathRejected, check_name, confine
from loom_http.state import runtime_of

routes = Routes()
DEFAULT_USER = "default"
SETTINGS_FILE = "comfy.settings.json"


def user_root(request: web.Request, *, create: bool = True) -> Path:
    root = runtime_of(request).settings.user_dir / DEFAULT_USER
    if create:
        root.mkdir(parents=True, exist_ok=True)
    return root


def _user_file(request: web.Request, name: str) -> Path:
    if not name or not name.strip("/"):
        raise PathRejected("invalid file name")
    return confine(user_root(request), name)


def _file_info(path: Path, relative: str) -> dict[str, Any]:
    stat = path.stat()
    return {
        "path": relative,
        "size": stat.st_size,
        "modified": int(stat.st_mtime * 1000),
        "created": int(stat.st_ctime * 1000),
    }


# --- users ----------------------------------------------------------------------------------


def _users_file(request: web.Request) -> Path:
    return runtime_of(request).settings.user_dir / "users.json"


@routes.get("/users")
async def get_users(request: web.Request) -> web.Response:
    return json_response(
        {"storage": "server", "migrated": user_root(request, create=False).is_dir()}
    )


@routes.post("/users")
async def post_users(request: web.Request) -> web.Response:
    body = await read_json(request, kind=dict)
    username = body.get("username")
    if not isinstance(username, str) or not username.strip():
        return error_response("username not provided")
    path = _users_file(request)
    users = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if username.strip() in users.values():
        return error_response("Duplicate username.")
    user_id = re.sub("[^a-zA-Z0-9-_]+", "-", username.strip()) + "_" + str(uuid.uuid4())
    users[user_id] = username.strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(users), encoding="utf-8")
    return json_response(user_id)


# --- settings -------------------------------------------------------------------------------


def _read_settings(request: web.Request) -> dict[str, Any]:
    path = user_root(request, create=False) / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_settings(request: web.Request, settings: dict[str, Any]) -> None:
    path = user_root(request) / SETTINGS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(settings, indent=4), encoding="utf-8")
    os.replace(tmp, path)


@routes.get("/settings")
async def get_settings(request: web.Request) -> web.Response:
    return json_response(_read_settings(request))


@routes.get("/settings/{setting_id}")
async def get_setting(request: web.Request) -> web.Response:
    return json_response(_read_settings(request).get(request.match_info["setting_id"]))


@routes.post("/settings")
async def post_settings(request: web.Request) -> web.Response:
    body = await read_json(request, kind=dict)
    settings = _read_settings(request)
    settings.update(body)
    _write_settings(request, settings)
    return web.Response()


@routes.post("/settings/{setting_id}")
async def post_setting(request: web.Request) -> web.Response:
    value = await read_json(request)
    settings = _read_settings(request)
    settings[request.match_info["setting_id"]] = value
    _write_settings(request, settings)
    return web.Response()


# --- userdata -------------------------------------------------------------------------------


def _list(folder: Path, recurse: bool) -> list[Path]:
    walker = folder.rglob("*") if recurse else folder.iterdir()
    return sorted(p for p in walker if p.is_file())


@routes.get("/userdata")
async def list_userdata(request: web.Request) -> web.StreamResponse:
    directory = request.query.get("dir")
    if not directory:
        return web.Response(status=400, text="dir is required")
    try:
        check_name(directory, what="dir")
    except PathRejected:
        return web.Response(status=403)
    folder = confine(user_root(request), directory)
    if not folder.is_dir():
        return web.Response(status=404)
    recurse = truthy(request.query.get("recurse"))
    full_info, split = truthy(request.query.get("full_info")), truthy(request.query.get("split"))
    files = await asyncio.get_running_loop().run_in_executor(None, _list, folder, recurse)
    result: list[Any] = []
    for path in files:
        relative = path.relative_to(folder).as_posix()
        if full_info:
            result.append(_file_info(path, relative))
        elif split:
            result.append([relative, *relative.split("/")])
        else:
            result.append(relative)
    return json_response(result)


@routes.get("/v2/userdata")
async def list_userdata_v2(request: web.Request) -> web.Response:
    relative = request.query.get("path", "").strip("/")
    root = user_root(request)
    folder = confine(root, relative) if relative else root
    if not folder.is_dir():
        return error_response("Path not found", 404)
    entries = []
    for path in sorted(folder.iterdir(), key=lambda p: (not p.is_dir(), p.name.lower())):
        entry: dict[str, Any] = {
            "name": path.name,
            "path": path.relative_to(root).as_posix(),
            "type": "directory" if path.is_dir() else "file",
        }
        if path.is_file():
            stat = path.stat()
            entry.update(size=stat.st_size, modified=stat.st_mtime)
        entries.append(entry)
    return json_response(entries)


@routes.get("/userdata/{file}")
async def get_userdata(request: web.Request) -> web.StreamResponse:
    path = _user_file(request, request.match_info["file"])
    if not path.is_file():
        return web.Response(status=404)
    return web.FileResponse(path)


def _written(request: web.Request, path: Path) -> web.Response:
    relative = path.relative_to(user_root(request)).as_posix()
    if truthy(request.query.get("full_info")):
        return json_response(_file_info(path, relative))
    return json_response(relative)


@routes.post("/userdata/{file}")
async def post_userdata(request: web.Request) -> web.Response:
    path = _user_file(request, request.match_info["file"])
    overwrite = request.query.get("overwrite", "true").lower() != "false"
    if path.exists() and not overwrite:
        return web.Response(status=409, text="File already exists")
    if path.is_dir():
        raise BadRequest("a directory of that name exists")
    body = await request.read()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return _written(request, path)


@routes.delete("/userdata/{file}")
async def delete_userdata(request: web.Request) -> web.Response:
    path = _user_file(request, request.match_info["file"])
    if not path.is_file():
        return web.Response(status=404)
    path.unlink()
    return web.Response(status=204)


@routes.post("/userdata/{file}/move/{dest}")
async def move_userdata(request: web.Request) -> web.Response:
    source = _user_file(request, request.match_info["file"])
    dest = _user_file(request, request.match_info["dest"])
    if not source.is_file():
        return web.Response(status=404)
    overwrite = request.query.get("overwrite", "true").lower() != "false"
    if dest.exists() and not overwrite:
        return web.Response(status=409, text="File already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, dest)
    return _written(request, dest)
