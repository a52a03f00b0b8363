"""``/prompt`` (queue and count), ``/interrupt`` and ``/free``."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from aiohttp import web

from loom.errors import PromptValidationError
from loom.frontend import validation_report
from loom_http.extensions import apply_prompt_handlers
from loom_http.routes import Routes, json_response, read_json
from loom_http.state import OPTIONS, runtime_of, service_of

log = logging.getLogger(__name__)
routes = Routes()


def _prompt_error(kind: str, message: str, details: str = "") -> web.Response:
    return json_response(
        {
            "error": {"type": kind, "message": message, "details": details, "extra_info": {}},
            "node_errors": {},
        },
        400,
    )


@routes.get("/prompt")
async def get_prompt(request: web.Request) -> web.Response:
    return json_response({"exec_info": {"queue_remaining": runtime_of(request).queue.remaining()}})


@routes.post("/prompt")
async def post_prompt(request: web.Request) -> web.Response:
    body = apply_prompt_handlers(request.app, await read_json(request, kind=dict))
    if "prompt" not in body:
        return _prompt_error("no_prompt", "No prompt provided", "No prompt provided")
    number = body.get("number")
    if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float))):
        return _prompt_error("invalid_request", "'number' must be a number", f"got {number!r}")
    extra_data = body.get("extra_data") or {}
    if not isinstance(extra_data, dict):
        return _prompt_error("invalid_request", "'extra_data' must be an object")
    partial = body.get("partial_execution_targets")
    if partial is not None and not isinstance(partial, list):
        return _prompt_error(
            "invalid_request", "'partial_execution_targets' must be a list of node ids"
        )
    prompt_id = body.get("prompt_id")
    if prompt_id is not None and not isinstance(prompt_id, str):
        return _prompt_error("invalid_request", "'prompt_id' must be a string")
    client_id = body.get("client_id")
    preview_method = request.app[OPTIONS].preview_method
    if preview_method != "none":
        extra_data.setdefault("preview_method", preview_method)
    submit = functools.partial(
        service_of(request).submit,
        body["prompt"],
        client_id=client_id if isinstance(client_id, str) else None,
        prompt_id=prompt_id,
        number=number,
        front=bool(body.get("front")),
        extra_data=extra_data,
        partial_targets=partial,
    )
    try:
        submitted = await asyncio.get_running_loop().run_in_executor(None, submit)
    except PromptValidationError as exc:
        # the server console names each node and input, as ComfyUI's does
        report = validation_report(exc.error, exc.node_errors, body["prompt"])
        log.info("invalid prompt: %s", report.removeprefix("error: "))
        return json_response({"error": exc.error, "node_errors": exc.node_errors}, 400)
    return json_response(
        {
            "prompt_id": submitted.prompt_id,
            "number": submitted.number,
            "node_errors": submitted.node_errors,
        }
    )


@routes.post("/interrupt")
async def interrupt(request: web.Request) -> web.Response:
    """Global interrupt, or only the given ``prompt_id`` if it is the one running."""
    body = await read_json(request, allow_empty=True)
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    if prompt_id is not None and not isinstance(prompt_id, str):
        return web.Response()  # names no prompt that can be running
    # Through the queue, so the worker running it hears it even in another process.
    service_of(request).interrupt(prompt_id)
    return web.Response()


@routes.post("/free")
async def free(request: web.Request) -> web.Response:
    body: Any = await read_json(request, allow_empty=True) or {}
    if not isinstance(body, dict):
        return json_response({"error": "expected a JSON object"}, 400)
    service_of(request).request_free(
        unload_models=bool(body.get("unload_models")), free_memory=bool(body.get("free_memory"))
    )
    return web.Response()
