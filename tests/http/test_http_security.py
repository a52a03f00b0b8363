"""Auth token, origin check, CORS, cache headers, both route prefixes, frontend placeholder."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.asyncio

ROUTES = [
    ("GET", "/prompt"),
    ("GET", "/api/prompt"),
    ("POST", "/prompt"),
    ("GET", "/queue"),
    ("POST", "/queue"),
    ("GET", "/history"),
    ("GET", "/history/x"),
    ("POST", "/history"),
    ("POST", "/interrupt"),
    ("POST", "/free"),
    ("GET", "/view?filename=x.png"),
    ("POST", "/upload/image"),
    ("POST", "/upload/mask"),
    ("GET", "/view_metadata/loras?filename=a.safetensors"),
    ("GET", "/object_info"),
    ("GET", "/object_info/X"),
    ("GET", "/embeddings"),
    ("GET", "/models"),
    ("GET", "/models/checkpoints"),
    ("GET", "/experiment/models"),
    ("GET", "/system_stats"),
    ("GET", "/features"),
    ("GET", "/extensions"),
    ("GET", "/i18n"),
    ("GET", "/global_subgraphs"),
    ("GET", "/workflow_templates"),
    ("GET", "/users"),
    ("POST", "/users"),
    ("GET", "/settings"),
    ("GET", "/settings/a"),
    ("POST", "/settings/a"),
    ("POST", "/settings"),
    ("GET", "/userdata?dir=workflows"),
    ("GET", "/v2/userdata"),
    ("GET", "/userdata/a.json"),
    ("POST", "/userdata/a.json"),
    ("DELETE", "/userdata/a.json"),
    ("POST", "/userdata/a.json/move/b.json"),
    ("GET", "/api/jobs"),
    ("GET", "/api/jobs/x"),
    ("GET", "/internal/files/input"),
    ("GET", "/internal/logs"),
    ("GET", "/internal/folder_paths"),
    ("GET", "/"),
    ("GET", "/ws"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_requires_the_token(make_client, method, path):
    client = await make_client(auth_token="s3cret")
    response = await client.request(method, path)
    assert response.status == 401
    wrong = await client.request(method, path, headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    ok = await client.request(method, path, headers={"Authorization": "Bearer s3cret"})
    assert ok.status != 401


async def test_api_prefix_versions_exist(client):
    for _, path in ROUTES:
        if path.startswith(("/api/", "/internal/", "/ws")) or path == "/":
            continue
        bare = await client.get(path)
        prefixed = await client.get("/api" + path)
        assert prefixed.status == bare.status, path


async def test_websocket_auth_by_header_query_and_cookie(make_client):
    client = await make_client(auth_token="s3cret")
    with pytest.raises(Exception):  # noqa: B017 - aiohttp raises WSServerHandshakeError
        await client.ws_connect("/ws?clientId=a")
    ws = await client.ws_connect("/ws?clientId=a", headers={"Authorization": "Bearer s3cret"})
    assert (await ws.receive_json(timeout=5))["type"] == "status"
    await ws.close()
    ws = await client.ws_connect("/ws?clientId=b&token=s3cret")
    assert (await ws.receive_json(timeout=5))["data"]["sid"] == "b"
    await ws.close()
    # a browser opening /?token=... gets a cookie that authorises later calls
    page = await client.get("/?token=s3cret")
    assert page.status == 200
    assert (await client.get("/api/users")).status == 200


async def test_origin_check(client):
    host = f"127.0.0.1:{client.port}"
    ok = await client.get("/api/users", headers={"Host": host, "Origin": f"http://{host}"})
    assert ok.status == 200
    evil = await client.post(
        "/api/prompt", json={}, headers={"Host": host, "Origin": "http://evil.example"}
    )
    assert evil.status == 403 and await evil.read() == b""
    other_port = await client.get(
        "/api/users", headers={"Host": host, "Origin": "http://127.0.0.1:1"}
    )
    assert other_port.status == 403
    no_port = await client.get(
        "/api/users", headers={"Host": "localhost", "Origin": "http://localhost:9999"}
    )
    assert no_port.status == 200  # ComfyUI compares hosts only when one side has no port
    remote = await client.get(
        "/api/users", headers={"Host": "example.org:80", "Origin": "http://evil.example"}
    )
    assert remote.status == 200  # only loopback hosts are checked
    options = await client.options("/api/prompt")
    assert options.status == 200
    assert "Access-Control-Allow-Origin" not in ok.headers
    with pytest.raises(Exception):  # noqa: B017
        await client.ws_connect("/ws", headers={"Host": host, "Origin": "http://evil.example"})


async def test_cors_headers_when_enabled(make_client):
    client = await make_client(cors_origin="https://app.example")
    host = f"127.0.0.1:{client.port}"
    response = await client.get(
        "/api/users", headers={"Host": host, "Origin": "https://app.example"}
    )
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert (
        response.headers["Access-Control-Allow-Methods"] == "POST, GET, DELETE, PUT, OPTIONS, PATCH"
    )
    assert response.headers["Access-Control-Allow-Headers"] == "Content-Type, Authorization"
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    preflight = await client.options("/api/prompt")
    assert (
        preflight.status == 200
        and preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    )
    missing = await client.get("/nothing-here.js")
    assert (
        missing.status == 404
        and missing.headers["Access-Control-Allow-Origin"] == "https://app.example"
    )


async def test_cors_preflight_passes_auth(make_client):
    client = await make_client(cors_origin="*", auth_token="t")
    assert (await client.options("/api/prompt")).status == 200
    assert (await client.get("/api/prompt")).status == 401


async def test_placeholder_page_without_frontend(make_client, monkeypatch):
    from loom_http import frontend

    monkeypatch.setattr(
        frontend, "frontend_root", lambda options: None
    )  # even if [ui] is installed
    client = await make_client()
    response = await client.get("/")
    assert response.status == 200 and response.content_type == "text/html"
    page = await response.text()
    # loom-http is not on PyPI: the command names the frontend package its [ui] extra pins
    assert re.search(r"pip install comfyui-frontend-package==\d+\.\d+", page)
    assert 'pip install -e "plugins/http[ui]"' in page
    assert response.headers["Cache-Control"] == "no-cache" and response.headers["Expires"] == "0"


async def test_frontend_root_is_served_with_cache_headers(make_client, tmp_path):
    root = tmp_path / "fe"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<html>frontend</html>")
    (root / "assets" / "app.js").write_text("console.log(1)")
    (root / "assets" / "logo.png").write_bytes(b"\x89PNG")
    (root / "templates").mkdir()
    (root / "templates" / "index.json").write_text("[]")
    client = await make_client(front_end_root=root)
    index = await client.get("/")
    assert await index.text() == "<html>frontend</html>" and index.headers["Pragma"] == "no-cache"
    script = await client.get("/assets/app.js")
    assert script.status == 200 and script.headers["Cache-Control"] == "no-cache"
    image = await client.get("/assets/logo.png")
    assert image.headers["Cache-Control"] == "public, max-age=86400"
    missing = await client.get("/assets/none.png")
    assert missing.status == 404 and missing.headers["Cache-Control"] == "public, max-age=3600"
    assert (await client.get("/templates/index.json")).headers["Cache-Control"] == "no-cache"
    # API routes win over static files
    assert (await client.get("/api/users")).status == 200
    assert (await client.get("/assets/../../secret")).status in (400, 403, 404)


async def test_unknown_errors_are_500_json_and_loom_errors_400(client, runtime, monkeypatch):
    from loom.errors import LoomError

    def broken(*args, **kwargs):
        raise RuntimeError("kaputt")

    monkeypatch.setattr(runtime.queue, "pending", broken)
    response = await client.get("/queue")
    assert response.status == 500 and "error" in await response.json()

    def refused(*args, **kwargs):
        raise LoomError("nope", hint="try again")

    monkeypatch.setattr(runtime.queue, "pending", refused)
    response = await client.get("/queue")
    body = await response.json()
    assert response.status == 400 and "nope" in body["error"]["message"]
    assert body["error"]["type"] == "LoomError" and body["node_errors"] == {}
