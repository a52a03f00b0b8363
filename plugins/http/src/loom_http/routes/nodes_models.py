"""Nodes, models and system information: ``/object_info``, ``/models``, ``/embeddings``,
``/experiment/models``, ``/system_stats``, ``/features``, ``/extensions``, ``/i18n``,
``/global_subgraphs``, ``/workflow_templates``, ``/internal/folder_paths``, ``/internal/logs``.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

import loom
from loom_http.routes import Routes, json_response
from loom_http.security import check_name, confine
from loom_http.state import LOGS, options_of, runtime_of
from loom_http.ws import server_feature_flags

routes = Routes()
#: ComfyUI 0.8.0 pins this frontend; the frontend warns when it is older than this.
REQUIRED_FRONTEND_VERSION = "1.35.9"
COMFYUI_VERSION = "0.8.0"
_NOT_EXPERIMENT = frozenset({"configs", "custom_nodes"})
_PREVIEW_SUFFIXES = (
    ".webp",
    ".png",
    ".jpg",
    ".jpeg",
    ".preview.png",
    ".preview.jpg",
    ".preview.webp",
)


@routes.get("/object_info")
async def object_info(request: web.Request) -> web.Response:
    from loom.frontend import object_info as build

    runtime = runtime_of(request)
    document = await asyncio.get_running_loop().run_in_executor(
        None, build, runtime.registry, runtime.environment
    )
    return json_response(document)


@routes.get("/object_info/{node_class}")
async def object_info_one(request: web.Request) -> web.Response:
    from loom.frontend import node_info_json

    runtime = runtime_of(request)
    class_type = request.match_info["node_class"]
    definition = runtime.registry.get_node(class_type)
    if definition is None:
        return json_response({})
    return json_response({class_type: node_info_json(definition, runtime.environment)})


def _filenames(request: web.Request, key: str) -> list[str]:
    try:
        return runtime_of(request).folders.filenames(key)
    except KeyError:
        return []


@routes.get("/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    return json_response([os.path.splitext(name)[0] for name in _filenames(request, "embeddings")])


@routes.get("/models")
async def model_folders(request: web.Request) -> web.Response:
    return json_response([key for key in runtime_of(request).folders.keys() if key != "tokenizers"])


@routes.get("/models/{folder}")
async def model_files(request: web.Request) -> web.Response:
    folders = runtime_of(request).folders
    folder = request.match_info["folder"]
    try:
        names = await asyncio.get_running_loop().run_in_executor(None, folders.filenames, folder)
    except KeyError:
        return web.Response(status=404)
    return json_response(names)


@routes.get("/experiment/models")
async def experiment_models(request: web.Request) -> web.Response:
    folders = runtime_of(request).folders
    return json_response(
        [
            {"name": key, "folders": [str(p) for p in folders.paths(key)]}
            for key in folders.keys()
            if key not in _NOT_EXPERIMENT
        ]
    )


def _model_entries(folders: Any, key: str) -> list[dict[str, Any]]:
    entries = []
    for index, root in enumerate(folders.paths(key)):
        for name in folders.filenames(key):
            path = root / name
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append(
                {
                    "name": name,
                    "pathIndex": index,
                    "modified": stat.st_mtime,
                    "created": stat.st_ctime,
                    "size": stat.st_size,
                }
            )
    return entries


@routes.get("/experiment/models/{folder}")
async def experiment_model_files(request: web.Request) -> web.Response:
    folders = runtime_of(request).folders
    key = request.match_info["folder"]
    if key not in folders.keys():
        return web.Response(status=404)
    return json_response(
        await asyncio.get_running_loop().run_in_executor(None, _model_entries, folders, key)
    )


@routes.get("/experiment/models/preview/{folder}/{path_index}/{filename:.*}")
async def experiment_model_preview(request: web.Request) -> web.StreamResponse:
    folders = runtime_of(request).folders
    key, filename = request.match_info["folder"], request.match_info["filename"]
    check_name(filename, what="filename")
    try:
        roots = folders.paths(key)
        root = roots[int(request.match_info["path_index"])]
    except (KeyError, ValueError, IndexError):
        return web.Response(status=404)
    stem = os.path.splitext(filename)[0]
    for suffix in _PREVIEW_SUFFIXES:
        candidate = confine(root, stem + suffix)
        if candidate.is_file():
            return web.FileResponse(candidate)
    return web.Response(status=404)


def _system_stats(argv: list[str]) -> dict[str, Any]:
    import psutil

    memory = psutil.virtual_memory()
    torch_version = "unknown"
    devices: list[dict[str, Any]] = []
    torch = sys.modules.get("torch")  # never import torch just to answer this
    if torch is not None:
        torch_version = torch.__version__
        if torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(index)
                devices.append(
                    {
                        "name": f"cuda:{index} {torch.cuda.get_device_name(index)}",
                        "type": "cuda",
                        "index": index,
                        "vram_total": total,
                        "vram_free": free,
                        "torch_vram_total": total,
                        "torch_vram_free": free,
                    }
                )
    else:
        try:
            from importlib.metadata import version

            torch_version = version("torch")
        except Exception:
            pass
    if not devices:
        devices.append(
            {
                "name": "cpu",
                "type": "cpu",
                "index": None,
                "vram_total": memory.total,
                "vram_free": memory.available,
                "torch_vram_total": memory.total,
                "torch_vram_free": memory.available,
            }
        )
    return {
        "system": {
            "os": sys.platform,
            "ram_total": memory.total,
            "ram_free": memory.available,
            "comfyui_version": COMFYUI_VERSION,
            "loom_version": loom.__version__,
            "required_frontend_version": REQUIRED_FRONTEND_VERSION,
            "installed_templates_version": None,
            "required_templates_version": None,
            "python_version": sys.version,
            "pytorch_version": torch_version,
            "embedded_python": os.path.split(os.path.split(sys.executable)[0])[1]
            == "python_embeded",
            "argv": argv,
            "platform": platform.platform(),
        },
        "devices": devices,
    }


@routes.get("/system_stats")
async def system_stats(request: web.Request) -> web.Response:
    stats = await asyncio.get_running_loop().run_in_executor(None, _system_stats, list(sys.argv))
    return json_response(stats)


@routes.get("/features")
async def features(request: web.Request) -> web.Response:
    return json_response(server_feature_flags(options_of(request)))


def web_directories(runtime: Any) -> dict[str, Path]:
    """``{package name: WEB_DIRECTORY}`` of every loaded custom node package."""
    found = {}
    for plugin in runtime.host.pm.get_plugins():
        directory = getattr(plugin, "web_directory", None)
        if directory is not None and Path(directory).is_dir():
            found[str(getattr(plugin, "name", ""))] = Path(directory)
    return found


@routes.get("/extensions")
async def extensions(request: web.Request) -> web.Response:
    urls = []
    for name, directory in web_directories(runtime_of(request)).items():
        for path in sorted(directory.rglob("*.js")):
            urls.append(f"/extensions/{name}/{path.relative_to(directory).as_posix()}")
    return json_response(urls)


@routes.get("/i18n")
async def i18n(request: web.Request) -> web.Response:
    return json_response({})


@routes.get("/global_subgraphs")
async def global_subgraphs(request: web.Request) -> web.Response:
    return json_response({})


@routes.get("/global_subgraphs/{subgraph_id}")
async def global_subgraph(request: web.Request) -> web.Response:
    return web.Response(status=404)


@routes.get("/workflow_templates")
async def workflow_templates(request: web.Request) -> web.Response:
    return json_response({})


@routes.get("/internal/folder_paths", prefixed=False)
async def folder_paths(request: web.Request) -> web.Response:
    folders = runtime_of(request).folders
    return json_response({key: [str(p) for p in folders.paths(key)] for key in folders.keys()})


@routes.get("/internal/logs", prefixed=False)
async def logs(request: web.Request) -> web.Response:
    return json_response(request.app[LOGS].text())


@routes.get("/internal/logs/raw", prefixed=False)
async def logs_raw(request: web.Request) -> web.Response:
    return json_response(
        {"entries": list(request.app[LOGS].entries), "size": {"cols": 80, "rows": 24}}
    )


@routes.patch("/internal/logs/subscribe", prefixed=False)
async def logs_subscribe(request: web.Request) -> web.Response:
    # Live log streaming over the websocket is not implemented; accept the call.
    return web.Response()
