"""Websocket protocol: status on connect, message order (comfy-compat 4.4), routing (4.2),
the feature_flags handshake and binary preview frames (4.5)."""

from __future__ import annotations

import json
import struct

import pytest
from http_helpers import (
    UNTIL_INTERRUPTED,
    image_prompt,
    post_prompt,
    raising_prompt,
    receive_until_done,
    slow_prompt,
    summary,
)

pytestmark = pytest.mark.asyncio

UNCACHED = [
    "status:1",
    "status:1",
    "execution_start",
    "execution_cached",
    "progress_state",
    "executing:1",
    "progress_state",
    "progress_state",
    "executing:2",
    "progress_state",
]


async def _connect(client, sid: str | None = "client-a", path: str = "/ws"):
    ws = await client.ws_connect(path if sid is None else f"{path}?clientId={sid}")
    first = await ws.receive_json(timeout=5)
    return ws, first


async def test_status_on_connect_with_and_without_client_id(client):
    ws, first = await _connect(client, "abc")
    assert first == {
        "type": "status",
        "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "abc"},
    }
    await ws.close()
    ws, first = await _connect(client, None, "/api/ws")
    sid = first["data"]["sid"]
    assert len(sid) == 32 and int(sid, 16) >= 0  # a hex uuid the frontend adopts
    await ws.close()


async def test_feature_flags_handshake(client):
    ws, _ = await _connect(client)
    await ws.send_str(
        json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    )
    reply = await ws.receive_json(timeout=5)
    assert reply == {
        "type": "feature_flags",
        "data": {
            "supports_preview_metadata": True,
            "max_upload_size": 100 * 1024 * 1024,
            "extension": {"manager": {"supports_v4": True}},
        },
    }
    # only the first message is a handshake; later ones are ignored
    await ws.send_str(json.dumps({"type": "feature_flags", "data": {}}))
    await ws.send_str("not json at all")
    response = await post_prompt(client, image_prompt(), client_id="client-a")
    messages = await receive_until_done(ws, response["prompt_id"])
    assert "feature_flags" not in summary(messages)
    await ws.close()


async def test_uncached_run_order(client):
    ws, _ = await _connect(client)
    response = await post_prompt(client, image_prompt(), client_id="client-a")
    messages = await receive_until_done(ws, response["prompt_id"])
    kinds = summary(messages)
    assert kinds[:10] == UNCACHED
    tail = kinds[10:]
    # the two output nodes run in an unspecified order, each: state, executing, executed, state
    assert sorted(tail[:8]) == sorted(
        [
            "progress_state",
            "executing:3",
            "executed:3",
            "progress_state",
            "progress_state",
            "executing:4",
            "executed:4",
            "progress_state",
        ]
    )
    for node in ("3", "4"):
        i = tail.index(f"executing:{node}")
        assert tail[i - 1] == "progress_state" and tail[i + 1] == f"executed:{node}"
        assert tail[i + 2] == "progress_state"
    assert tail[8:] == ["execution_success", "status:0", "executing:None"]
    executed = {
        m["data"]["node"]: m["data"]
        for m in messages
        if isinstance(m, dict) and m["type"] == "executed"
    }
    assert executed["4"]["output"]["images"][0]["type"] == "output"
    assert executed["3"]["output"]["images"][0]["type"] == "temp"
    assert (
        executed["4"]["display_node"] == "4" and executed["4"]["prompt_id"] == response["prompt_id"]
    )
    start = messages[2]["data"]
    assert set(start) == {"prompt_id", "timestamp"}
    assert messages[3]["data"]["nodes"] == []
    state = [m for m in messages if isinstance(m, dict) and m["type"] == "progress_state"][-1][
        "data"
    ]
    assert state["nodes"]["1"]["state"] == "finished" and state["nodes"]["1"]["real_node_id"] == "1"
    await ws.close()


async def test_fully_cached_run_order(client):
    ws, _ = await _connect(client)
    first = await post_prompt(client, image_prompt(), client_id="client-a")
    await receive_until_done(ws, first["prompt_id"])
    second = await post_prompt(client, image_prompt(), client_id="client-a")
    messages = await receive_until_done(ws, second["prompt_id"])
    kinds = summary(messages)
    assert kinds[:4] == ["status:1", "status:1", "execution_start", "execution_cached"]
    assert sorted(messages[3]["data"]["nodes"]) == ["1", "2", "3", "4"]
    assert not any(k.startswith("executing:") and k != "executing:None" for k in kinds)
    assert sorted(k for k in kinds if k.startswith("executed")) == ["executed:3", "executed:4"]
    assert kinds[-3:] == ["execution_success", "status:0", "executing:None"]
    await ws.close()


async def test_error_run_order(client):
    ws, _ = await _connect(client)
    response = await post_prompt(client, raising_prompt(), client_id="client-a")
    messages = await receive_until_done(ws, response["prompt_id"])
    kinds = summary(messages)
    assert "execution_success" not in kinds
    i = kinds.index("execution_error")
    assert "executing:2" in kinds[:i]
    assert kinds[i + 1 :] == ["status:0", "executing:None"]
    error = messages[i]["data"]
    assert error["node_id"] == "2" and error["node_type"] == "HttpTestRaise"
    assert "boom" in error["exception_message"] and error["exception_type"] == "RuntimeError"
    assert isinstance(error["traceback"], list) and "image" in error["current_inputs"]
    await ws.close()


async def test_interrupt_run_order_and_broadcast(client):
    ws, _ = await _connect(client)
    other, _ = await _connect(client, "client-b")
    response = await post_prompt(
        client, slow_prompt(steps=UNTIL_INTERRUPTED, delay=0.01), client_id="client-a"
    )
    prompt_id = response["prompt_id"]
    while True:  # wait until the slow node runs
        message = await ws.receive_json(timeout=10)
        if message["type"] == "progress":
            break
    assert (await client.post("/interrupt", json={"prompt_id": prompt_id})).status == 200
    messages = await receive_until_done(ws, prompt_id)
    kinds = summary(messages)
    i = kinds.index("execution_interrupted")
    assert kinds[i + 1 :] == ["status:0", "executing:None"]
    assert (
        messages[i]["data"]["node_id"] == "2" and messages[i]["data"]["node_type"] == "HttpTestSlow"
    )
    # the other client sees status and the broadcast interrupt, nothing else
    seen = []
    while "status:0" not in seen:
        message = await other.receive_json(timeout=5)
        seen.append(summary([message])[0])
    assert set(seen) <= {"status:1", "status:0", "execution_interrupted"}
    assert "execution_interrupted" in seen
    history = await (await client.get(f"/history/{prompt_id}")).json()
    status = history[prompt_id]["status"]
    assert status["status_str"] == "error" and status["completed"] is False
    assert status["messages"][-1][0] == "execution_interrupted"
    await ws.close()
    await other.close()


async def test_second_client_sees_only_status(client):
    ws, _ = await _connect(client)
    other, _ = await _connect(client, "client-b")
    response = await post_prompt(client, image_prompt(), client_id="client-a")
    await receive_until_done(ws, response["prompt_id"])
    seen = []
    while len(seen) < 3:
        seen.append(summary([await other.receive_json(timeout=5)])[0])
    assert seen == ["status:1", "status:1", "status:0"]
    await ws.close()
    await other.close()


async def test_prompt_without_client_id_sends_only_progress_to_everyone(client):
    ws, _ = await _connect(client)
    response = await post_prompt(client, slow_prompt(steps=2, delay=0, seed=7, preview=True))
    seen = []
    while "status:0" not in seen:
        message = await ws.receive(timeout=10)
        if message.type.name == "BINARY":
            seen.append("binary")
            assert struct.unpack(">II", message.data[:8]) == (1, 1)  # legacy JPEG frame
        else:
            seen.append(summary([json.loads(message.data)])[0])
    assert set(seen) <= {"status:1", "status:0", "progress", "progress_state", "binary"}
    assert "progress" in seen and "binary" in seen
    assert response["prompt_id"]


async def test_preview_frames_with_and_without_metadata(client):
    ws, _ = await _connect(client)
    await ws.send_str(
        json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    )
    assert (await ws.receive_json(timeout=5))["type"] == "feature_flags"
    response = await post_prompt(
        client, slow_prompt(steps=2, delay=0, seed=1, preview=True), client_id="client-a"
    )
    messages = await receive_until_done(ws, response["prompt_id"])
    frames = [m for m in messages if isinstance(m, bytes)]
    assert len(frames) == 2
    event, length = struct.unpack(">II", frames[0][:8])
    assert event == 4
    meta = json.loads(frames[0][8 : 8 + length])
    assert meta["node_id"] == "2" and meta["prompt_id"] == response["prompt_id"]
    assert meta["image_type"] == "image/jpeg" and frames[0][8 + length :].startswith(b"\xff\xd8")
    kinds = summary(messages)
    i = kinds.index("binary")
    assert kinds[i + 1] == "progress"  # preview frame, then its progress message
    progress = messages[i + 1]["data"]
    assert progress == {"value": 1, "max": 2, "prompt_id": response["prompt_id"], "node": "2"}
    await ws.close()

    legacy, _ = await _connect(client, "client-legacy")
    response = await post_prompt(
        client, slow_prompt(steps=1, delay=0, seed=2, preview=True), client_id="client-legacy"
    )
    messages = await receive_until_done(legacy, response["prompt_id"])
    frames = [m for m in messages if isinstance(m, bytes)]
    assert [struct.unpack(">II", f[:8]) for f in frames] == [(1, 1)]
    await legacy.close()


async def test_reconnect_with_same_sid_replaces_socket_and_reports_running_node(client):
    ws, _ = await _connect(client)
    response = await post_prompt(
        client, slow_prompt(steps=UNTIL_INTERRUPTED, delay=0.01, seed=3), client_id="client-a"
    )
    while (await ws.receive_json(timeout=10))["type"] != "progress":
        pass
    again, first = await _connect(client, "client-a")
    assert first["data"]["sid"] == "client-a"
    running = await again.receive_json(timeout=5)
    assert running["type"] == "executing" and running["data"]["node"] == "2"
    closed = await ws.receive(timeout=5)
    while closed.type.name == "TEXT":  # messages sent before the replacement
        closed = await ws.receive(timeout=5)
    assert closed.type.name in ("CLOSE", "CLOSED", "CLOSING")
    await client.post("/interrupt", json={"prompt_id": response["prompt_id"]})
    await receive_until_done(again, response["prompt_id"])
    await again.close()
