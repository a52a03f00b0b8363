"""``/queue`` and ``/history``: list, clear, delete (ComfyUI's shapes)."""

from __future__ import annotations

from aiohttp import web

from loom_http.routes import BadRequest, Routes, json_response, read_json
from loom_http.state import runtime_of

routes = Routes()


def _ids(body: dict, key: str) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"'{key}' must be a list of prompt ids")
    return value


def _int_query(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"'{name}' must be an integer") from None


@routes.get("/queue")
async def get_queue(request: web.Request) -> web.Response:
    queue = runtime_of(request).queue
    return json_response(
        {
            "queue_running": [item.as_list() for item in queue.running()],
            "queue_pending": [item.as_list() for item in queue.pending()],
        }
    )


@routes.post("/queue")
async def post_queue(request: web.Request) -> web.Response:
    body = await read_json(request, kind=dict)
    queue = runtime_of(request).queue
    if body.get("clear"):
        queue.clear()
    doomed = _ids(body, "delete")
    if doomed:
        queue.delete(doomed)
    return web.Response()


@routes.get("/history")
async def get_history(request: web.Request) -> web.Response:
    max_items = _int_query(request, "max_items")
    offset = _int_query(request, "offset")
    if max_items is not None and max_items < 0:
        raise BadRequest("'max_items' must not be negative")
    history = runtime_of(request).queue.history(max_items, -1 if offset is None else offset)
    return json_response({prompt_id: entry.as_dict() for prompt_id, entry in history.items()})


@routes.get("/history/{prompt_id}")
async def get_history_item(request: web.Request) -> web.Response:
    prompt_id = request.match_info["prompt_id"]
    entry = runtime_of(request).queue.history_item(prompt_id)
    return json_response({} if entry is None else {prompt_id: entry.as_dict()})


@routes.post("/history")
async def post_history(request: web.Request) -> web.Response:
    body = await read_json(request, kind=dict)
    queue = runtime_of(request).queue
    if body.get("clear"):
        queue.clear_history()
    doomed = _ids(body, "delete")
    if doomed:
        queue.delete_history(doomed)
    return web.Response()
