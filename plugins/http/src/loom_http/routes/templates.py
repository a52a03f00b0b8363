"""``/templates/...``: ComfyUI's workflow-template browser, from its template packages.

ComfyUI serves the files of the ``comfyui-workflow-templates`` packages (the template index,
workflow JSON and thumbnails) under ``/templates``. Loom does the same when those packages
are installed; without them ``/templates/index.json`` is an empty index, so the frontend's
template browser opens empty instead of failing on a 404.
"""

from __future__ import annotations

import functools
import logging
from importlib import resources
from pathlib import Path

from aiohttp import web

from loom.paths import PathOutsideError, confine
from loom_http.routes import Routes, json_response

log = logging.getLogger(__name__)

routes = Routes()

#: Packages whose ``templates/`` folder holds template files: the single legacy package,
#: then the split layout (workflow JSON and index in one, media in the others).
TEMPLATE_PACKAGES = (
    "comfyui_workflow_templates",
    "comfyui_workflow_templates_json",
    "comfyui_workflow_templates_core",
    "comfyui_workflow_templates_media_image",
    "comfyui_workflow_templates_media_video",
    "comfyui_workflow_templates_media_api",
    "comfyui_workflow_templates_media_other",
    "comfyui_workflow_templates_media_assets_01",
    "comfyui_workflow_templates_media_assets_02",
)


@functools.cache
def template_dirs() -> tuple[Path, ...]:
    """The installed template packages' ``templates/`` folders, in lookup order."""
    found = []
    for package in TEMPLATE_PACKAGES:
        try:
            folder = Path(str(resources.files(package).joinpath("templates")))
        except (ModuleNotFoundError, TypeError):
            continue
        if folder.is_dir():
            found.append(folder)
    if found:
        log.info("workflow templates from %s", ", ".join(str(f) for f in found))
    return tuple(found)


def find_template_file(name: str, dirs: tuple[Path, ...]) -> Path | None:
    for folder in dirs:
        try:
            candidate = confine(folder, name)
        except PathOutsideError:
            return None
        if candidate.is_file():
            return candidate
    return None


@routes.get("/templates/{name:.+}", prefixed=False)
async def template_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    dirs = template_dirs()
    path = find_template_file(name, dirs)
    if path is not None:
        return web.FileResponse(path)
    if name == "index.json" and not dirs:
        return json_response([])
    return web.Response(status=404)
