"""A disconnect mid-run, a burst of submissions, an interrupt and a raising node all leave
the server serving the next prompt."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest
from http_helpers import (
    UNTIL_INTERRUPTED,
    image_prompt,
    post_prompt,
    raising_prompt,
    receive_until_done,
    slow_prompt,
    wait_history,
    wait_running,
)

pytestmark = pytest.mark.asyncio


async def _next_prompt_works(client, color: int) -> None:
    ws = await client.ws_connect("/ws?clientId=after")
    await ws.receive_json(timeout=5)
    body = await post_prompt(client, image_prompt(color=color), client_id="after")
    messages = await receive_until_done(ws, body["prompt_id"], timeout=20)
    assert any(isinstance(m, dict) and m["type"] == "execution_success" for m in messages)
    await ws.close()


async def test_client_disconnect_mid_run(client):
    ws = await client.ws_connect("/ws?clientId=leaver")
    await ws.receive_json(timeout=5)
    body = await post_prompt(client, slow_prompt(steps=30, delay=0.01, seed=21), client_id="leaver")
    while (await ws.receive_json(timeout=10))["type"] != "progress":
        pass
    await ws.close()
    entry = await wait_history(client, body["prompt_id"])
    assert entry["status"]["status_str"] == "success"
    await _next_prompt_works(client, 101)


async def test_burst_of_concurrent_submissions(client):
    prompts = [image_prompt(size=8, color=i) for i in range(60)]
    responses = await asyncio.gather(*(client.post("/prompt", json={"prompt": p}) for p in prompts))
    bodies = [await r.json() for r in responses]
    assert all(r.status == 200 for r in responses)
    ids = [b["prompt_id"] for b in bodies]
    assert len(set(ids)) == 60 and sorted(b["number"] for b in bodies) == list(range(60))
    for prompt_id in ids:
        assert (await wait_history(client, prompt_id))["status"]["status_str"] == "success"
    await _next_prompt_works(client, 102)


async def test_interrupt_during_run(client):
    body = await post_prompt(client, slow_prompt(steps=UNTIL_INTERRUPTED, delay=0.01, seed=22))
    await wait_running(client, body["prompt_id"])
    assert (await client.post("/api/interrupt")).status == 200
    entry = await wait_history(client, body["prompt_id"])
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    await _next_prompt_works(client, 103)


async def test_node_raising(client, caplog):
    with caplog.at_level(logging.INFO, logger="loom_http.ws"):
        body = await post_prompt(client, raising_prompt())
        entry = await wait_history(client, body["prompt_id"])
        assert entry["status"]["status_str"] == "error"
        assert entry["status"]["messages"][-1][0] == "execution_error"
        await _next_prompt_works(client, 104)
    # the server console says which prompt failed where, and that the next one ran
    logged = [r.getMessage() for r in caplog.records if r.name == "loom_http.ws"]
    assert f"prompt {body['prompt_id']} failed: node 2 (HttpTestRaise) failed: " in logged[0]
    assert re.fullmatch(r"prompt \S+ executed in \d+\.\d\d s", logged[-1])


async def test_slow_websocket_reader_does_not_block_others(client):
    silent = await client.ws_connect("/ws?clientId=silent")  # never reads
    bodies = [
        await post_prompt(client, image_prompt(size=8, color=200 + i), client_id="silent")
        for i in range(10)
    ]
    for body in bodies:
        await wait_history(client, body["prompt_id"])
    await _next_prompt_works(client, 105)
    await silent.close()
