"""The web frontend: the ``comfyui-frontend-package`` static site (or ``--front-end-root``)
at ``/``, custom nodes' ``WEB_DIRECTORY`` at ``/extensions/<name>/``; without a frontend,
``/`` explains how to get one. Registered last, so API routes win over static files.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from aiohttp import web

from loom_http.state import RUNTIME, ServerOptions

log = logging.getLogger(__name__)

NO_CACHE = {"Cache-Control": "no-cache", "Pragma": "no-cache", "Expires": "0"}

PLACEHOLDER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Loom</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>Loom is running</h1>
<p>The ComfyUI-compatible API is available here (<code>/prompt</code>, <code>/ws</code>,
<code>/object_info</code>, ...), but no web frontend is installed.</p>
<p>To use the ComfyUI web interface, install it and restart the server:</p>
<pre>pip install {requirement}</pre>
<p>(what <code>pip install -e "plugins/http[ui]"</code> installs from a Loom checkout), or point
<code>loom serve --front-end-root DIR</code> at an unpacked frontend.</p>
</body></html>
"""


def frontend_requirement() -> str:
    """The pinned frontend package of loom-http's ``ui`` extra (the name alone if unknown)."""
    from importlib import metadata

    try:
        requires = metadata.requires("loom-http") or []
    except metadata.PackageNotFoundError:
        requires = []
    for requirement in requires:
        spec, _, marker = requirement.partition(";")
        if spec.startswith("comfyui-frontend-package") and "ui" in marker:
            return spec.strip()
    return "comfyui-frontend-package"


def frontend_root(options: ServerOptions) -> Path | None:
    """``--front-end-root``, else the installed ``comfyui_frontend_package``'s ``static`` dir."""
    if options.front_end_root is not None:
        root = Path(options.front_end_root)
        if not (root / "index.html").is_file():
            log.warning("--front-end-root %s has no index.html; serving the placeholder page", root)
            return None
        return root
    spec = importlib.util.find_spec("comfyui_frontend_package")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        static = Path(location) / "static"
        if (static / "index.html").is_file():
            return static
    return None


def frontend_version(root: Path | None) -> str | None:
    if root is None:
        return None
    try:
        from importlib.metadata import version

        return version("comfyui-frontend-package")
    except Exception:
        return None


def register(app: web.Application, options: ServerOptions) -> None:
    """Add the extension directories, ``/`` and the static mount (call last)."""
    from loom_http.routes.nodes_models import web_directories

    for name, directory in web_directories(app[RUNTIME]).items():
        app.router.add_static(f"/extensions/{name}", directory)
    root = frontend_root(options)
    if root is None:

        async def placeholder(request: web.Request) -> web.Response:
            page = PLACEHOLDER.format(requirement=frontend_requirement())
            return web.Response(text=page, content_type="text/html", headers=NO_CACHE)

        app.router.add_get("/", placeholder)
        return
    index = root / "index.html"

    async def get_root(request: web.Request) -> web.FileResponse:
        return web.FileResponse(index, headers=NO_CACHE)

    app.router.add_get("/", get_root)
    app.router.add_static("/", root)
    log.info("serving the web frontend from %s", root)
