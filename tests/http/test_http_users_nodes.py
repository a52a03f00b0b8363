"""Users, settings, userdata (v1 and v2, move, delete) and the node/model/system routes."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.asyncio


async def test_users_and_settings(client, runtime):
    assert await (await client.get("/api/users")).json() == {"storage": "server", "migrated": False}
    assert await (await client.get("/api/settings")).json() == {}
    assert (await client.post("/api/settings/Comfy.InstalledVersion", json="1.35.9")).status == 200
    assert (await client.post("/api/settings", json={"A": 1, "B": [1, 2]})).status == 200
    assert await (await client.get("/settings")).json() == {
        "Comfy.InstalledVersion": "1.35.9",
        "A": 1,
        "B": [1, 2],
    }
    assert await (await client.get("/settings/A")).json() == 1
    assert await (await client.get("/settings/missing")).json() is None
    assert (runtime.settings.user_dir / "default" / "comfy.settings.json").is_file()
    assert (await (await client.get("/users")).json())["migrated"] is True
    assert (await client.post("/settings/X", data=b"{oops")).status == 400
    assert (await client.post("/settings", json=[1])).status == 400
    user = await (await client.post("/users", json={"username": "Ann B"})).json()
    assert user.startswith("Ann-B_")
    assert (await client.post("/users", json={"username": "Ann B"})).status == 400
    assert (await client.post("/users", json={})).status == 400


async def test_userdata_roundtrip(client):
    assert (
        await client.get("/api/userdata?dir=workflows&recurse=true&split=false&full_info=true")
    ).status == 404
    assert (await client.get("/api/userdata/user.css")).status == 404
    written = await client.post("/api/userdata/workflows%2Fmy%20wf.json", data=b'{"nodes": []}')
    assert await written.json() == "workflows/my wf.json"
    assert (
        await (await client.get("/api/userdata/workflows%2Fmy%20wf.json")).read()
        == b'{"nodes": []}'
    )
    conflict = await client.post(
        "/api/userdata/workflows%2Fmy%20wf.json?overwrite=false", data=b"{}"
    )
    assert conflict.status == 409
    info = await (
        await client.post("/userdata/workflows%2Fb.json?full_info=true", data=b"{}")
    ).json()
    assert info["path"] == "workflows/b.json" and info["size"] == 2 and "modified" in info
    listing = await (await client.get("/userdata?dir=workflows")).json()
    assert listing == ["b.json", "my wf.json"]
    full = await (await client.get("/userdata?dir=workflows&full_info=true")).json()
    assert {entry["path"] for entry in full} == {"b.json", "my wf.json"}
    await client.post("/userdata/workflows%2Fsub%2Fc.json", data=b"{}")
    assert "sub/c.json" in await (await client.get("/userdata?dir=workflows&recurse=true")).json()
    assert "sub/c.json" not in await (await client.get("/userdata?dir=workflows")).json()
    split = await (await client.get("/userdata?dir=workflows&recurse=true&split=true")).json()
    assert ["sub/c.json", "sub", "c.json"] in split
    v2 = await (await client.get("/api/v2/userdata?path=workflows")).json()
    assert v2[0] == {"name": "sub", "path": "workflows/sub", "type": "directory"}
    assert {e["name"] for e in v2 if e["type"] == "file"} == {"b.json", "my wf.json"}
    root = await (await client.get("/v2/userdata")).json()
    assert any(e["name"] == "workflows" for e in root)
    moved = await client.post("/api/userdata/workflows%2Fb.json/move/workflows%2Frenamed.json")
    assert await moved.json() == "workflows/renamed.json"
    assert (await client.get("/api/userdata/workflows%2Fb.json")).status == 404
    blocked = await client.post(
        "/userdata/workflows%2Frenamed.json/move/workflows%2Fmy%20wf.json?overwrite=false"
    )
    assert blocked.status == 409
    assert (await client.delete("/api/userdata/workflows%2Frenamed.json")).status == 204
    assert (await client.delete("/api/userdata/workflows%2Frenamed.json")).status == 404
    assert (await client.get("/userdata")).status == 400


@pytest.mark.parametrize(
    "path",
    [
        "..%2F..%2Fsecret.txt",
        "%2Fetc%2Fpasswd",
        "..%252Fsecret.txt",
        "a%00b",
        "..%5Csecret.txt",
        "..",
    ],
)
async def test_userdata_rejects_traversal(client, tmp_path, path):
    (tmp_path / "secret.txt").write_text("TOPSECRET")
    for response in (
        await client.get(f"/api/userdata/{path}"),
        await client.post(f"/api/userdata/{path}", data=b"x"),
        await client.delete(f"/api/userdata/{path}"),
    ):
        assert response.status in (400, 403, 404), path
        assert b"TOPSECRET" not in await response.read()
    assert (tmp_path / "secret.txt").read_text() == "TOPSECRET"
    move = await client.post(f"/api/userdata/{path}/move/x.json")
    assert move.status in (400, 403, 404)


async def test_userdata_symlink_out_and_dir_traversal(client, runtime, tmp_path):
    (tmp_path / "secret.txt").write_text("TOPSECRET")
    user = runtime.settings.user_dir / "default"
    user.mkdir(parents=True)
    os.symlink(tmp_path / "secret.txt", user / "link.json")
    response = await client.get("/api/userdata/link.json")
    assert response.status == 403 and b"TOPSECRET" not in await response.read()
    assert (await client.post("/api/userdata/link.json", data=b"overwritten")).status == 403
    assert (tmp_path / "secret.txt").read_text() == "TOPSECRET"
    assert (await client.get("/api/userdata?dir=..")).status == 403
    assert (await client.get("/api/userdata?dir=%2Fetc")).status == 403
    assert (await client.get("/api/v2/userdata?path=..")).status in (400, 403)


async def test_object_info(client):
    info = await (await client.get("/api/object_info")).json()
    assert {"EmptyImage", "SaveImage", "PreviewImage", "LoadImage", "HttpTestSlow"} <= set(info)
    assert info["SaveImage"]["output_node"] is True
    one = await (await client.get("/object_info/ImageInvert")).json()
    assert list(one) == ["ImageInvert"] and one["ImageInvert"]["display_name"] == "Invert Image"
    assert await (await client.get("/object_info/Nope")).json() == {}


async def test_models_and_embeddings(client, runtime):
    models = runtime.settings.models_dir
    (models / "checkpoints" / "sub").mkdir(parents=True)
    (models / "checkpoints" / "sub" / "a.safetensors").write_bytes(b"")
    (models / "checkpoints" / "b.ckpt").write_bytes(b"")
    (models / "checkpoints" / "notes.txt").write_text("")
    (models / "embeddings").mkdir()
    (models / "embeddings" / "emb.pt").write_bytes(b"")
    keys = await (await client.get("/api/models")).json()
    assert {"checkpoints", "loras", "vae", "embeddings"} <= set(keys)
    assert await (await client.get("/models/checkpoints")).json() == ["b.ckpt", "sub/a.safetensors"]
    assert (await client.get("/models/nope")).status == 404
    assert await (await client.get("/embeddings")).json() == ["emb"]
    experiment = await (await client.get("/api/experiment/models")).json()
    names = {entry["name"] for entry in experiment}
    assert "checkpoints" in names and "configs" not in names and "custom_nodes" not in names
    files = await (await client.get("/api/experiment/models/checkpoints")).json()
    assert {f["name"] for f in files} == {"b.ckpt", "sub/a.safetensors"} and files[0][
        "pathIndex"
    ] == 0
    assert (await client.get("/api/experiment/models/nope")).status == 404
    assert (await client.get("/api/experiment/models/preview/checkpoints/0/b.ckpt")).status == 404
    (models / "checkpoints" / "b.png").write_bytes(b"\x89PNG")
    assert (await client.get("/api/experiment/models/preview/checkpoints/0/b.ckpt")).status == 200
    assert (
        await client.get("/api/experiment/models/preview/checkpoints/0/..%2F..%2Fx")
    ).status in (400, 404)
    paths = await (await client.get("/internal/folder_paths")).json()
    assert str(models / "checkpoints") in paths["checkpoints"]


async def test_system_features_extensions_misc(client):
    stats = await (await client.get("/api/system_stats")).json()
    assert stats["system"]["comfyui_version"] == "0.8.0"
    assert stats["system"]["required_frontend_version"] and stats["devices"][0]["type"] in (
        "cpu",
        "cuda",
    )
    assert {"ram_total", "ram_free", "python_version", "pytorch_version", "argv", "os"} <= set(
        stats["system"]
    )
    features = await (await client.get("/api/features")).json()
    assert (
        features["supports_preview_metadata"] is True
        and features["max_upload_size"] == 100 * 1024 * 1024
    )
    assert await (await client.get("/api/extensions")).json() == []
    for path in ("/api/i18n", "/api/global_subgraphs", "/api/workflow_templates"):
        assert await (await client.get(path)).json() == {}
    assert (await client.get("/api/global_subgraphs/x")).status == 404
    logs = await (await client.get("/internal/logs")).json()
    assert isinstance(logs, str)
    raw = await (await client.get("/internal/logs/raw")).json()
    assert isinstance(raw["entries"], list)
    assert (await client.patch("/internal/logs/subscribe", json={"enabled": True})).status == 200
    assert (await client.get("/api/internal/logs")).status == 404
