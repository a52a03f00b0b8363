"""Everything together: `loom serve` with every plugin runs ComfyUI's default txt2img workflow
for a client written like ComfyUI's websocket API example, with latent previews, and gives the
same image as `loom run`."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

pytest.importorskip("loom_http")
pytest.importorskip("loom_samplers")
demo = pytest.importorskip("loom_sd15.demo")

LAUNCH = "from loom.cli.main import main; raise SystemExit(main())"


def loom(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", LAUNCH, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def workspace(tmp_path):
    """A base directory holding the tiny demo checkpoint, and the default workflow as an API prompt."""
    demo.ensure_demo_files(tmp_path / "models")
    workflow = demo.bundled_workflow()
    demo.set_widget(workflow, "CheckpointLoaderSimple", 0, demo.DEMO_CHECKPOINT)
    demo.set_widget(workflow, "EmptyLatentImage", 0, 64)
    demo.set_widget(workflow, "EmptyLatentImage", 1, 64)
    demo.set_widget(workflow, "KSampler", 0, 42)  # seed
    demo.set_widget(workflow, "KSampler", 2, 3)  # steps
    (tmp_path / "workflow.json").write_text(json.dumps(workflow))
    converted = loom("--base-directory", str(tmp_path), "convert", "workflow.json", cwd=tmp_path)
    assert converted.returncode == 0, converted.stderr
    prompt = json.loads(converted.stdout)
    assert prompt["3"]["inputs"]["seed"] == 42 and prompt["3"]["inputs"]["steps"] == 3
    return tmp_path, prompt


def start_server(base: Path, port: int) -> subprocess.Popen:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("LOOM_PLUGINS", "LOOM_DISABLE_PLUGINS")
    }
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "--base-directory", str(base), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"loom serve exited: {process.stdout.read().decode()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/prompt", timeout=1):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("loom serve did not become ready")


async def run_prompt(address: str, prompt: dict) -> tuple[str, list[str], int]:
    """Queue with latent previews, follow the websocket to the end; (prompt id, message types, previews)."""
    import aiohttp

    client_id = uuid.uuid4().hex
    seen: list[str] = []
    previews = 0
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"ws://{address}/ws?clientId={client_id}") as ws:
            await ws.send_str(
                json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
            )
            body = {
                "prompt": prompt,
                "client_id": client_id,
                "extra_data": {"preview_method": "latent2rgb"},
            }
            async with session.post(f"http://{address}/prompt", json=body) as response:
                assert response.status == 200, await response.text()
                prompt_id = (await response.json())["prompt_id"]
            while True:
                message = await ws.receive(timeout=120)
                if message.type == aiohttp.WSMsgType.BINARY:
                    (event,) = struct.unpack(">I", message.data[:4])
                    (length,) = struct.unpack(">I", message.data[4:8])
                    meta = json.loads(message.data[8 : 8 + length])
                    assert (
                        event == 4 and meta["node_id"] == "3" and meta["image_type"] == "image/jpeg"
                    )
                    assert message.data[8 + length : 8 + length + 2] == b"\xff\xd8"  # a JPEG
                    previews += 1
                    continue
                data = json.loads(message.data)
                seen.append(data["type"])
                if data["type"] == "execution_error":
                    raise AssertionError(data["data"]["exception_message"])
                if (
                    data["type"] == "executing"
                    and data["data"]["node"] is None
                    and data["data"]["prompt_id"] == prompt_id
                ):
                    return prompt_id, seen, previews


def fetch(address: str, path: str) -> bytes:
    with urllib.request.urlopen(f"http://{address}{path}") as response:
        return response.read()


@pytest.mark.slow
def test_default_workflow_over_http_matches_loom_run(workspace):
    from PIL import Image

    base, prompt = workspace
    port = free_port()
    process = start_server(base, port)
    address = f"127.0.0.1:{port}"
    try:
        prompt_id, seen, previews = asyncio.run(run_prompt(address, prompt))
        assert (
            previews == 3 and seen.count("progress") == 3
        )  # one preview and one progress per step
        assert seen.index("execution_start") < seen.index("execution_success")
        history = json.loads(fetch(address, f"/history/{prompt_id}"))[prompt_id]
        assert history["status"]["status_str"] == "success"
        (image,) = history["outputs"]["9"]["images"]
        served = Image.open(
            io.BytesIO(fetch(address, f"/view?filename={image['filename']}&type=output"))
        )
        assert served.size == (64, 64)

        _, cached_seen, cached_previews = asyncio.run(run_prompt(address, prompt))
        assert "executing" in cached_seen and cached_previews == 0 and "progress" not in cached_seen
    finally:
        process.terminate()
        process.wait(timeout=20)

    (base / "api.json").write_text(json.dumps(prompt))
    cli = loom(
        "--base-directory",
        str(base),
        "run",
        "api.json",
        "-q",
        "--set",
        "9.filename_prefix=cli",
        cwd=base,
    )
    assert cli.returncode == 0, cli.stderr
    from_cli = Image.open(cli.stdout.split()[0])
    assert from_cli.tobytes() == served.tobytes()  # same seed, same image, whichever frontend
