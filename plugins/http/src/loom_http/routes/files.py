"""Files: ``/view``, ``/upload/image``, ``/upload/mask``, ``/view_metadata/{folder}`` and
``/internal/files/{type}``. Every client-named path goes through :mod:`loom_http.security`.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import mimetypes
import os
import struct
from pathlib import Path
from typing import Any

from aiohttp import web

from loom_http.routes import BadRequest, Routes, error_response, json_response, truthy
from loom_http.security import PathForbidden, PathRejected, check_name, confine
from loom_http.state import runtime_of

routes = Routes()
KINDS = ("input", "output", "temp")
_ANNOTATIONS = {"[input]": "input", "[output]": "output", "[temp]": "temp"}
_FORCED_BINARY = {"text/html", "text/javascript", "application/javascript", "text/css"}
_IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif"}
)


def _directory(request: web.Request, kind: str | None) -> tuple[Path, str]:
    kind = kind or "input"
    if kind not in KINDS:
        raise BadRequest(f"invalid type {kind!r}: expected one of {', '.join(KINDS)}")
    return runtime_of(request).settings.directory(kind), kind


def split_annotation(name: str) -> tuple[str, str | None]:
    """``"x.png [output]"`` -> ``("x.png", "output")``; ``(name, None)`` without one."""
    for suffix, kind in _ANNOTATIONS.items():
        if name.endswith(suffix):
            return name[: -len(suffix)].rstrip(), kind
    return name, None


def subfolder_path(base: Path, subfolder: str) -> Path:
    """``base / subfolder``; a subfolder escaping ``base`` is a 403 (as ComfyUI)."""
    if "\x00" in subfolder:
        raise PathRejected("invalid subfolder: NUL byte")
    try:
        return confine(base, subfolder) if subfolder else base
    except PathRejected as exc:
        raise PathForbidden(f"subfolder {subfolder!r} is outside the folder") from exc


def _file_under(base: Path, subfolder: str, filename: str) -> Path:
    check_name(filename, what="filename")
    return confine(subfolder_path(base, subfolder), filename)


# --- /view ----------------------------------------------------------------------------------


def _reencode(path: Path, preview: str | None, channel: str) -> tuple[bytes, str]:
    from PIL import Image

    with Image.open(path) as img:
        buffer = io.BytesIO()
        if preview is not None:
            parts = preview.split(";")
            fmt = parts[0] if parts[0] in ("webp", "jpeg") and "a" not in channel else "webp"
            quality = int(parts[-1]) if parts[-1].isdigit() else 90
            if fmt == "jpeg" or channel == "rgb":
                img = img.convert("RGB")
            img.save(buffer, format=fmt, quality=quality)
            return buffer.getvalue(), f"image/{fmt}"
        if channel == "rgb":
            out = img.convert("RGBA").convert("RGB") if img.mode == "RGBA" else img.convert("RGB")
        else:  # "a": the image's alpha as the alpha of a black RGBA image
            alpha = img.getchannel("A") if img.mode == "RGBA" else Image.new("L", img.size, 255)
            out = Image.new("RGBA", img.size)
            out.putalpha(alpha)
        out.save(buffer, format="PNG")
        return buffer.getvalue(), "image/png"


@routes.get("/view")
async def view(request: web.Request) -> web.StreamResponse:
    query = request.query
    name = query.get("filename")
    if not name:
        raise BadRequest("'filename' is required")
    filename, kind = split_annotation(name)
    if not filename:
        raise BadRequest("'filename' is empty")
    base, _ = _directory(request, kind or query.get("type", "output"))
    path = _file_under(base, query.get("subfolder", ""), filename)
    if not path.is_file():
        return web.Response(status=404)
    disposition = {"Content-Disposition": f'filename="{path.name}"'}
    channel = query.get("channel", "")
    preview = query.get("preview")
    if preview is not None or channel in ("rgb", "a"):
        loop = asyncio.get_running_loop()
        try:
            body, content_type = await loop.run_in_executor(None, _reencode, path, preview, channel)
        except (OSError, ValueError) as exc:
            raise BadRequest(f"cannot convert {path.name}: {exc}") from exc
        return web.Response(body=body, content_type=content_type, headers=disposition)
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if content_type in _FORCED_BINARY:
        content_type = "application/octet-stream"
    return web.FileResponse(path, headers={**disposition, "Content-Type": content_type})


# --- uploads --------------------------------------------------------------------------------


def _check_image(data: bytes) -> None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except Exception as exc:  # PIL raises many types for garbage
        raise BadRequest(f"the uploaded file is not an image: {exc}") from exc


def _write_mask(data: bytes, original: Path, target: Path) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    with Image.open(original) as source:
        metadata = PngInfo()
        for key, value in getattr(source, "text", {}).items():
            metadata.add_text(key, value)
        picture = source.convert("RGBA")
    with Image.open(io.BytesIO(data)) as mask:
        picture.putalpha(mask.convert("RGBA").getchannel("A"))
    picture.save(target, compress_level=4, pnginfo=metadata)


async def _upload(request: web.Request, *, mask: bool) -> web.Response:
    post = await request.post()
    field = post.get("image")
    if field is None or not hasattr(field, "file"):
        raise BadRequest("'image' (a file) is required")
    filename = field.filename or ""
    if not filename:
        raise BadRequest("the uploaded file has no name")
    check_name(filename, allow_subdirs=False, what="filename")
    if Path(filename).suffix.lower() not in _IMAGE_SUFFIXES:
        raise BadRequest(f"only image files can be uploaded, not {filename!r}")
    data = field.file.read()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, _check_image, data)
    base, kind = _directory(request, str(post.get("type") or "input"))
    subfolder = str(post.get("subfolder", ""))
    folder = subfolder_path(base, subfolder)
    original = _mask_original(request, post) if mask else None
    target, duplicate = _target_file(
        folder, filename, data, overwrite=truthy(str(post.get("overwrite", "")))
    )
    if not duplicate:
        folder.mkdir(parents=True, exist_ok=True)
        if original is not None:
            await loop.run_in_executor(None, _write_mask, data, original, target)
        else:
            target.write_bytes(data)
    return json_response({"name": target.name, "subfolder": subfolder, "type": kind})


def _target_file(folder: Path, filename: str, data: bytes, *, overwrite: bool) -> tuple[Path, bool]:
    """ComfyUI's naming: reuse an identical file, else ``name (1).png``, ``name (2).png``..."""
    target = confine(folder, filename)
    if overwrite:
        return target, False
    stem, suffix = os.path.splitext(filename)
    digest = hashlib.sha256(data).digest()
    counter = 1
    while target.exists():
        if target.is_file() and hashlib.sha256(target.read_bytes()).digest() == digest:
            return target, True
        target = confine(folder, f"{stem} ({counter}){suffix}")
        counter += 1
    return target, False


def _mask_original(request: web.Request, post: Any) -> Path:
    try:
        ref = json.loads(str(post.get("original_ref") or ""))
    except json.JSONDecodeError as exc:
        raise BadRequest(f"'original_ref' must be JSON: {exc}") from exc
    if not isinstance(ref, dict) or not ref.get("filename"):
        raise BadRequest("'original_ref' must be an object with a 'filename'")
    filename, kind = split_annotation(str(ref["filename"]))
    base, _ = _directory(request, kind or str(ref.get("type") or "output"))
    path = _file_under(base, str(ref.get("subfolder") or ""), filename)
    if not path.is_file():
        raise web.HTTPNotFound(
            text=json.dumps({"error": "original image not found"}), content_type="application/json"
        )
    return path


@routes.post("/upload/image")
async def upload_image(request: web.Request) -> web.Response:
    return await _upload(request, mask=False)


@routes.post("/upload/mask")
async def upload_mask(request: web.Request) -> web.Response:
    return await _upload(request, mask=True)


# --- metadata and listings ------------------------------------------------------------------


def read_safetensors_metadata(path: Path) -> dict[str, Any] | None:
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return None
        (length,) = struct.unpack("<Q", head)
        if length > 100 * 1024 * 1024:
            return None
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else None


@routes.get("/view_metadata/{folder}")
async def view_metadata(request: web.Request) -> web.Response:
    filename = request.query.get("filename")
    if not filename:
        return web.Response(status=404)
    check_name(filename, what="filename")
    if not filename.endswith(".safetensors"):
        return web.Response(status=404)
    try:
        path = runtime_of(request).folders.find(request.match_info["folder"], filename)
    except KeyError:
        return web.Response(status=404)
    if path is None:
        return web.Response(status=404)
    metadata = await asyncio.get_running_loop().run_in_executor(
        None, read_safetensors_metadata, path
    )
    return web.Response(status=404) if metadata is None else json_response(metadata)


@routes.get("/internal/files/{directory_type}", prefixed=False)
async def internal_files(request: web.Request) -> web.Response:
    kind = request.match_info["directory_type"]
    if kind not in KINDS:
        return error_response("Invalid directory type")
    folder = runtime_of(request).settings.directory(kind)
    try:
        entries = [entry for entry in os.scandir(folder) if entry.is_file()]
    except FileNotFoundError:
        entries = []
    entries.sort(key=lambda entry: entry.stat().st_mtime, reverse=True)
    return json_response([entry.name for entry in entries])
