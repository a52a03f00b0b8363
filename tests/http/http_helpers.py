"""Test nodes, prompts and websocket helpers shared by the loom-http tests."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import loom
from loom import testing
from loom.events import Preview
from loom.runtime import Runtime
from loom.types import Image


def png_bytes(size: tuple[int, int] = (4, 4), color: tuple[int, ...] = (255, 0, 0, 255)) -> bytes:
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.new("RGBA", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@loom.node("HttpTestRaise", category="testing")
class HttpTestRaise:
    """Always raises: the error path."""

    image: Image

    def run(self, ctx: loom.RunContext) -> Image:
        raise RuntimeError("boom from HttpTestRaise")


@loom.node("HttpTestSlow", category="testing")
class HttpTestSlow:
    """Sleeps ``steps`` x ``delay`` seconds, reporting progress (and a JPEG preview)."""

    image: Image
    steps: int = loom.ui.int(3, min=1, max=10_000)
    delay: float = loom.ui.float(0.01, min=0, max=10)
    seed: int = loom.ui.int(0, min=0, max=2**31)
    preview: bool = loom.ui.boolean(False)

    def run(self, ctx: loom.RunContext) -> Image:
        for step in range(1, self.steps + 1):
            time.sleep(self.delay)
            frame = None
            if self.preview:
                frame = Preview(
                    "JPEG",
                    b"\xff\xd8fake-jpeg",
                    node_id=ctx.node_id,
                    prompt_id=ctx.prompt_id,
                    display_node_id=ctx.node_id,
                    real_node_id=ctx.node_id,
                )
            ctx.progress(step, self.steps, frame)
        return self.image


class HttpTestNodes:
    """A throwaway plugin registering the test nodes."""

    @loom.hookimpl
    def register_nodes(self, register: Callable[..., None]) -> None:
        register(HttpTestRaise)
        register(HttpTestSlow)


def make_runtime(base: Path) -> Runtime:
    """Core's built-ins, loom-http and the test nodes, based in ``base``."""
    settings = testing.make_settings(base, load_custom_nodes=True)
    runtime = testing.make_runtime(
        "http", settings=settings, **{"http-test-nodes": HttpTestNodes()}
    )
    _ = runtime.registry
    return runtime


# --- prompts ----------------------------------------------------------------------------------


def image_prompt(size: int = 16, color: int = 0, prefix: str = "loomtest") -> dict[str, Any]:
    """EmptyImage(1) -> ImageInvert(2) -> PreviewImage(3), SaveImage(4): comfy-compat 4.4."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def slow_prompt(
    steps: int = 3, delay: float = 0.01, seed: int = 0, preview: bool = False
) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {
            "class_type": "HttpTestSlow",
            "inputs": {
                "image": ["1", 0],
                "steps": steps,
                "delay": delay,
                "seed": seed,
                "preview": preview,
            },
        },
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }


def raising_prompt() -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "HttpTestRaise", "inputs": {"image": ["1", 0]}},
        "3": {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": "never"},
        },
    }


async def receive_until_done(ws: Any, prompt_id: str, timeout: float = 30.0) -> list[Any]:
    """Messages (dicts for text, bytes for binary) up to this prompt's ``executing`` None."""
    messages: list[Any] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise AssertionError(f"prompt {prompt_id} did not finish; got {summary(messages)}")
        message = await ws.receive(timeout=remaining)
        if message.type.name == "TEXT":
            data = json.loads(message.data)
            messages.append(data)
            if (
                data["type"] == "executing"
                and data["data"].get("node") is None
                and data["data"].get("prompt_id") == prompt_id
            ):
                return messages
        elif message.type.name == "BINARY":
            messages.append(message.data)
        else:
            raise AssertionError(f"websocket closed: {message}")


def summary(messages: list[Any]) -> list[str]:
    """Compact ``type[:node]`` list for order assertions."""
    out = []
    for message in messages:
        if isinstance(message, bytes):
            out.append("binary")
            continue
        kind, data = message["type"], message["data"]
        if kind in ("executing", "executed"):
            out.append(f"{kind}:{data.get('node')}")
        elif kind == "status":
            out.append(f"status:{data['status']['exec_info']['queue_remaining']}")
        else:
            out.append(kind)
    return out


async def post_prompt(client: Any, prompt: dict[str, Any], **body: Any) -> dict[str, Any]:
    response = await client.post("/prompt", json={"prompt": prompt, **body})
    assert response.status == 200, await response.text()
    return await response.json()


#: Steps of a slow prompt that is always interrupted: it cannot finish before the test acts,
#: however loaded the machine (10_000 x 0.01 s bounds it at 100 s if an interrupt were lost).
UNTIL_INTERRUPTED = 10_000


async def wait_running(client: Any, prompt_id: str, timeout: float = 30.0) -> None:
    """Wait until ``prompt_id`` is the running prompt (``/queue``), not merely queued."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = await (await client.get("/queue")).json()
        if any(item[1] == prompt_id for item in queue["queue_running"]):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"prompt {prompt_id} never started running")


async def wait_history(client: Any, prompt_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await client.get(f"/history/{prompt_id}")
        data = await response.json()
        if data:
            return data[prompt_id]
        await asyncio.sleep(0.02)
    raise AssertionError(f"prompt {prompt_id} never reached history")
