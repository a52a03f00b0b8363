"""``/api/jobs``: the queue and history as one list of jobs (frontend 1.58+).

Only with the ``/api`` prefix, as ComfyUI. Statuses: ``pending``, ``in_progress``,
``completed``, ``failed`` and ``cancelled`` (interrupted runs; ComfyUI 0.8 rejects that
status although frontend 1.58 asks for it).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from loom.frontend import HistoryEntry, QueueItem
from loom_http.routes import Routes, error_response, json_response
from loom_http.state import runtime_of

routes = Routes()
STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
SORT_KEYS = ("created_at", "execution_duration")


def _workflow_id(item: QueueItem) -> str | None:
    pnginfo = item.extra_data.get("extra_pnginfo")
    workflow = pnginfo.get("workflow") if isinstance(pnginfo, dict) else None
    return workflow.get("id") if isinstance(workflow, dict) else None


def _drop_none(job: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in job.items() if value is not None}


def queued_job(item: QueueItem, status: str) -> dict[str, Any]:
    return _drop_none(
        {
            "id": item.prompt_id,
            "status": status,
            "priority": item.number,
            "create_time": item.extra_data.get("create_time"),
            "outputs_count": 0,
            "workflow_id": _workflow_id(item),
        }
    )


def entry_status(entry: HistoryEntry) -> str:
    if entry.status.get("status_str") == "success":
        return "completed"
    messages = entry.status.get("messages") or []
    if messages and messages[-1][0] == "execution_interrupted":
        return "cancelled"
    return "failed"


def _preview(outputs: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    count, preview = 0, None
    for node_id, ui in outputs.items():
        for media_type, items in (ui or {}).items():
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, dict) and "filename" in item:
                    count += 1
                    if preview is None or (
                        preview["type"] != "output" and item.get("type") == "output"
                    ):
                        preview = {
                            "filename": item["filename"],
                            "subfolder": item.get("subfolder", ""),
                            "type": item.get("type", "output"),
                            "nodeId": node_id,
                            "mediaType": media_type,
                        }
    return count, preview


def finished_job(entry: HistoryEntry) -> dict[str, Any]:
    count, preview = _preview(entry.outputs)
    item = entry.item
    return _drop_none(
        {
            "id": item.prompt_id,
            "status": entry_status(entry),
            "priority": item.number,
            "create_time": item.extra_data.get("create_time"),
            "execution_start_time": entry.execution_start_ms,
            "execution_end_time": entry.execution_end_ms,
            "execution_error": entry.error,
            "outputs_count": count,
            "preview_output": preview,
            "workflow_id": _workflow_id(item),
        }
    )


def _duration(job: dict[str, Any]) -> int:
    return (job.get("execution_end_time") or 0) - (job.get("execution_start_time") or 0)


def _all_jobs(request: web.Request, wanted: set[str]) -> list[dict[str, Any]]:
    queue = runtime_of(request).queue
    jobs: list[dict[str, Any]] = []
    if "pending" in wanted:
        jobs += [queued_job(item, "pending") for item in queue.pending()]
    if "in_progress" in wanted:
        jobs += [queued_job(item, "in_progress") for item in queue.running()]
    if wanted & {"completed", "failed", "cancelled"}:
        for entry in queue.history().values():
            job = finished_job(entry)
            if job["status"] in wanted:
                jobs.append(job)
    return jobs


def _parse_int(raw: str | None, name: str, minimum: int) -> int | None:
    if raw is None or raw == "":
        return None
    value = int(raw)  # ValueError handled by the caller
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}")
    return value


@routes.get("/jobs", bare=False)
async def list_jobs(request: web.Request) -> web.Response:
    query = request.query
    raw_status = query.get("status")
    wanted = (
        set(STATUSES) if not raw_status else {s.strip() for s in raw_status.split(",") if s.strip()}
    )
    unknown = wanted - set(STATUSES)
    if unknown:
        return error_response(
            f"Invalid status value(s): {', '.join(sorted(unknown))}. "
            f"Valid values: {', '.join(STATUSES)}"
        )
    sort_by = query.get("sort_by", "created_at")
    sort_order = query.get("sort_order", "desc")
    if sort_by not in SORT_KEYS:
        return error_response(f"sort_by must be one of: {', '.join(SORT_KEYS)}")
    if sort_order not in ("asc", "desc"):
        return error_response("sort_order must be 'asc' or 'desc'")
    try:
        limit = _parse_int(query.get("limit"), "limit", 1)
        offset = _parse_int(query.get("offset"), "offset", 0) or 0
    except ValueError as exc:
        return error_response(f"Invalid limit/offset: {exc}")
    jobs = _all_jobs(request, wanted)
    workflow_id = query.get("workflow_id")
    if workflow_id:
        jobs = [job for job in jobs if job.get("workflow_id") == workflow_id]
    key = (
        _duration if sort_by == "execution_duration" else (lambda job: job.get("create_time") or 0)
    )
    jobs.sort(key=key, reverse=sort_order == "desc")
    total = len(jobs)
    page = jobs[offset : None if limit is None else offset + limit]
    return json_response(
        {
            "jobs": page,
            "pagination": {
                "offset": offset,
                "limit": limit,
                "total": total,
                "has_more": offset + len(page) < total,
            },
        }
    )


@routes.get("/jobs/{job_id}", bare=False)
async def get_job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    queue = runtime_of(request).queue
    entry = queue.history_item(job_id)
    if entry is not None:
        job = finished_job(entry)
        job.update(
            outputs=entry.outputs,
            execution_status=entry.status,
            workflow={"prompt": entry.item.prompt, "extra_data": entry.item.as_list()[3]},
        )
        return json_response(job)
    for status, items in (("in_progress", queue.running()), ("pending", queue.pending())):
        for item in items:
            if item.prompt_id == job_id:
                job = queued_job(item, status)
                job["workflow"] = {"prompt": item.prompt, "extra_data": item.as_list()[3]}
                return json_response(job)
    return error_response("Job not found", 404)
