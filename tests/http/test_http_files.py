"""/view, /upload/image, /upload/mask, /view_metadata, /internal/files; path confinement."""

from __future__ import annotations

import io
import json
import os
import struct

import aiohttp
import pytest
from http_helpers import image_prompt, png_bytes, post_prompt, wait_history
from PIL import Image

pytestmark = pytest.mark.asyncio


def _form(data: bytes, name: str = "pic.png", **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("image", data, filename=name, content_type="image/png")
    for key, value in fields.items():
        form.add_field(key, value)
    return form


async def test_view_output_and_temp_images(client):
    body = await post_prompt(client, image_prompt())
    entry = await wait_history(client, body["prompt_id"])
    for node in ("3", "4"):
        image = entry["outputs"][node]["images"][0]
        response = await client.get("/view", params={**image, "rand": "0.5"})
        assert response.status == 200 and response.content_type == "image/png"
        assert response.headers["Content-Disposition"] == f'filename="{image["filename"]}"'
        assert (await response.read()).startswith(b"\x89PNG")
    saved = entry["outputs"]["4"]["images"][0]["filename"]
    annotated = await client.get(
        "/api/view", params={"filename": f"{saved} [output]", "type": "input"}
    )
    assert annotated.status == 200
    preview = await client.get("/view", params={"filename": saved, "preview": "jpeg;50"})
    assert preview.content_type == "image/jpeg" and (await preview.read()).startswith(b"\xff\xd8")
    webp = await client.get("/view", params={"filename": saved, "preview": "webp"})
    assert webp.content_type == "image/webp"
    rgb = Image.open(
        io.BytesIO(
            await (await client.get("/view", params={"filename": saved, "channel": "rgb"})).read()
        )
    )
    assert rgb.mode == "RGB"
    alpha = Image.open(
        io.BytesIO(
            await (await client.get("/view", params={"filename": saved, "channel": "a"})).read()
        )
    )
    assert alpha.mode == "RGBA" and alpha.getchannel("A").getextrema() == (255, 255)


async def test_view_errors(client, runtime):
    assert (await client.get("/view")).status == 400
    assert (await client.get("/view", params={"filename": "missing.png"})).status == 404
    assert (await client.get("/view", params={"filename": "x.png", "type": "models"})).status == 400
    out = runtime.settings.output_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "page.html").write_text("<script>alert(1)</script>")
    response = await client.get("/view", params={"filename": "page.html"})
    assert response.content_type == "application/octet-stream"
    (out / "broken.png").write_bytes(b"not a png")
    assert (
        await client.get("/view", params={"filename": "broken.png", "preview": "jpeg"})
    ).status == 400


@pytest.mark.parametrize(
    ("params", "statuses"),
    [
        ({"filename": "../secret.txt"}, (400,)),
        ({"filename": "/etc/passwd"}, (400,)),
        ({"filename": "..%2Fsecret.txt"}, (400,)),  # encoded twice: still %2F after decoding
        ({"filename": "a%5c..%5csecret.txt"}, (400,)),
        ({"filename": "ok.png\x00.txt"}, (400,)),
        ({"filename": "..\\secret.txt"}, (400,)),
        ({"filename": "secret.txt", "subfolder": ".."}, (403,)),
        ({"filename": "secret.txt", "subfolder": "/etc"}, (403,)),
        ({"filename": "passwd", "subfolder": "../../../../../../etc"}, (403,)),
        ({"filename": "link.txt"}, (403,)),  # a symlink in output/ pointing outside it
        ({"filename": "secret.txt", "subfolder": "linkdir"}, (403,)),
    ],
)
async def test_view_rejects_traversal(client, runtime, tmp_path, params, statuses):
    (tmp_path / "secret.txt").write_text("TOPSECRET")
    out = runtime.settings.output_dir
    out.mkdir(parents=True, exist_ok=True)
    os.symlink(tmp_path / "secret.txt", out / "link.txt")
    os.symlink(tmp_path, out / "linkdir")
    response = await client.get("/view", params=params)
    assert response.status in statuses
    assert b"TOPSECRET" not in await response.read()


async def test_view_rejects_raw_encoded_path(client, tmp_path):
    (tmp_path / "secret.txt").write_text("TOPSECRET")
    response = await client.get("/view?filename=%2E%2E%2Fsecret.txt")
    assert response.status == 400
    response = await client.get("/view?filename=x.png&subfolder=%2E%2E")
    assert response.status == 403


async def test_upload_image_naming(client, runtime):
    red, blue = png_bytes(color=(255, 0, 0, 255)), png_bytes(color=(0, 0, 255, 255))
    response = await client.post("/upload/image", data=_form(red))
    assert await response.json() == {"name": "pic.png", "subfolder": "", "type": "input"}
    same = await (await client.post("/api/upload/image", data=_form(red))).json()
    assert same["name"] == "pic.png"  # identical content: reused
    other = await (await client.post("/upload/image", data=_form(blue))).json()
    assert other["name"] == "pic (1).png"
    third = await (
        await client.post("/upload/image", data=_form(png_bytes(color=(0, 255, 0, 255))))
    ).json()
    assert third["name"] == "pic (2).png"
    over = await (await client.post("/upload/image", data=_form(blue, overwrite="true"))).json()
    assert over["name"] == "pic.png"
    assert (runtime.settings.input_dir / "pic.png").read_bytes() == blue
    sub = await (
        await client.post("/upload/image", data=_form(red, subfolder="clipspace", type="temp"))
    ).json()
    assert sub == {"name": "pic.png", "subfolder": "clipspace", "type": "temp"}
    assert (runtime.settings.temp_dir / "clipspace" / "pic.png").is_file()
    # the uploaded file is usable by LoadImage and listed in its combo
    info = await (await client.get("/object_info/LoadImage")).json()
    assert "pic (1).png" in info["LoadImage"]["input"]["required"]["image"][0]


@pytest.mark.parametrize(
    "fields",
    [
        {"subfolder": "../outside"},
        {"subfolder": "/tmp"},
        {"subfolder": "a/../../b"},
        {"subfolder": "x\x00"},
    ],
)
async def test_upload_rejects_bad_subfolders(client, fields):
    response = await client.post("/upload/image", data=_form(png_bytes(), **fields))
    assert response.status in (400, 403)


@pytest.mark.parametrize("name", ["../evil.png", "/abs.png", "a\\b.png", "dir/x.png", "..", "."])
async def test_upload_rejects_bad_filenames(client, runtime, name):
    response = await client.post("/upload/image", data=_form(png_bytes(), name=name))
    assert response.status == 400, await response.text()
    assert not (runtime.settings.base_directory / "evil.png").exists()


@pytest.mark.parametrize("name", ["..%2Fevil.png", "..%5Cevil.png", "%2Fetc%2Fevil.png"])
async def test_upload_rejects_encoded_separators_in_raw_multipart(client, runtime, name):
    boundary = "XyZ"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + png_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = await client.post(
        "/upload/image",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status == 400, await response.text()
    assert not (runtime.settings.base_directory / "evil.png").exists()


async def test_upload_rejects_non_images_and_missing_file(client):
    response = await client.post(
        "/upload/image", data=_form(b"#!/bin/sh\necho hi", name="script.sh")
    )
    assert response.status == 400
    response = await client.post("/upload/image", data=_form(b"not really a png", name="fake.png"))
    assert response.status == 400
    form = aiohttp.FormData()
    form.add_field("type", "input")
    assert (await client.post("/upload/image", data=form)).status == 400
    assert (
        await client.post("/upload/image", data=_form(png_bytes(), type="models"))
    ).status == 400


async def test_upload_symlinked_subfolder_is_forbidden(client, runtime, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    runtime.settings.input_dir.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, runtime.settings.input_dir / "escape")
    response = await client.post("/upload/image", data=_form(png_bytes(), subfolder="escape"))
    assert response.status == 403
    assert not any(outside.iterdir())


async def test_upload_mask_replaces_alpha_and_keeps_text(client, runtime):
    from PIL.PngImagePlugin import PngInfo

    original = Image.new("RGBA", (4, 4), (10, 20, 30, 255))
    info = PngInfo()
    info.add_text("workflow", "{}")
    runtime.settings.input_dir.mkdir(parents=True, exist_ok=True)
    original.save(runtime.settings.input_dir / "orig.png", pnginfo=info)
    buffer = io.BytesIO()
    Image.new("RGBA", (4, 4), (0, 0, 0, 40)).save(buffer, format="PNG")
    ref = json.dumps({"filename": "orig.png", "subfolder": "", "type": "input"})
    response = await client.post(
        "/upload/mask",
        data=_form(buffer.getvalue(), name="mask.png", original_ref=ref, subfolder="clipspace"),
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body == {"name": "mask.png", "subfolder": "clipspace", "type": "input"}
    result = Image.open(runtime.settings.input_dir / "clipspace" / "mask.png")
    assert result.getpixel((0, 0)) == (10, 20, 30, 40)
    assert result.text.get("workflow") == "{}"
    bad_ref = json.dumps({"filename": "../orig.png"})
    assert (
        await client.post("/upload/mask", data=_form(buffer.getvalue(), original_ref=bad_ref))
    ).status == 400
    missing = json.dumps({"filename": "nope.png", "type": "input"})
    assert (
        await client.post("/upload/mask", data=_form(buffer.getvalue(), original_ref=missing))
    ).status == 404
    assert (
        await client.post("/upload/mask", data=_form(buffer.getvalue(), original_ref="{"))
    ).status == 400


async def test_upload_over_size_limit_is_413(make_client):
    client = await make_client(max_upload_size_mb=0.01)
    response = await client.post("/upload/image", data=_form(b"\x89PNG" + b"0" * 20_000))
    assert response.status == 413
    response = await client.post("/prompt", data=b"{" + b" " * 20_000 + b"}")
    assert response.status == 413


async def test_view_metadata(client, runtime):
    folder = runtime.settings.models_dir / "loras"
    folder.mkdir(parents=True)
    header = json.dumps({"__metadata__": {"ss_network_dim": "4"}}).encode()
    (folder / "tiny.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    response = await client.get("/view_metadata/loras", params={"filename": "tiny.safetensors"})
    assert await response.json() == {"ss_network_dim": "4"}
    assert (
        await client.get("/view_metadata/loras", params={"filename": "none.safetensors"})
    ).status == 404
    assert (
        await client.get("/view_metadata/nofolder", params={"filename": "tiny.safetensors"})
    ).status == 404
    assert (
        await client.get("/view_metadata/loras", params={"filename": "../x.safetensors"})
    ).status == 400


async def test_internal_files(client, runtime):
    runtime.settings.input_dir.mkdir(parents=True, exist_ok=True)
    (runtime.settings.input_dir / "a.png").write_bytes(png_bytes())
    assert await (await client.get("/internal/files/input")).json() == ["a.png"]
    assert await (await client.get("/internal/files/temp")).json() == []
    bad = await client.get("/internal/files/models")
    assert bad.status == 400 and await bad.json() == {"error": "Invalid directory type"}
    assert (await client.get("/api/internal/files/input")).status == 404  # bare only
