"""/prompt, /interrupt, /free, /queue, /history and /api/jobs."""

from __future__ import annotations

import logging

import pytest
from http_helpers import (
    UNTIL_INTERRUPTED,
    image_prompt,
    post_prompt,
    raising_prompt,
    slow_prompt,
    wait_history,
    wait_running,
)

pytestmark = pytest.mark.asyncio


async def test_post_prompt_queues_and_numbers(client):
    first = await post_prompt(client, image_prompt())
    assert set(first) == {"prompt_id", "number", "node_errors"} and first["number"] == 0
    bad = await client.post(
        "/api/prompt", json={"prompt": {"1": {"class_type": "Nope", "inputs": {}}}}
    )
    assert bad.status == 400
    second = await post_prompt(
        client, image_prompt(color=5), prompt_id="my-id", extra_data={"k": 1}
    )
    assert second["prompt_id"] == "my-id" and second["number"] == 2  # the rejected one used 1
    entry = await wait_history(client, "my-id")
    assert (
        entry["prompt"][0] == 2
        and entry["prompt"][3]["k"] == 1
        and "create_time" in entry["prompt"][3]
    )
    assert entry["outputs"]["4"]["images"][0]["filename"].startswith("loomtest_")
    assert entry["status"]["status_str"] == "success" and entry["meta"]["4"]["node_id"] == "4"
    front = await post_prompt(client, image_prompt(color=9), front=True)
    assert front["number"] == -3
    explicit = await post_prompt(client, image_prompt(color=10), number=1.5)
    assert explicit["number"] == 1.5


async def test_prompt_validation_errors_are_comfyui_shaped(client):
    response = await client.post(
        "/prompt",
        json={
            "prompt": {
                "1": {
                    "class_type": "EmptyImage",
                    "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0},
                },
                "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
                "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}},
                "4": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
            }
        },
    )
    assert response.status == 400
    body = await response.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"]["1"]["errors"][0]["type"] == "value_smaller_than_min"
    assert body["node_errors"]["3"]["errors"][0]["type"] == "required_input_missing"
    missing = await client.post("/prompt", json={"client_id": "x"})
    assert missing.status == 400
    assert (await missing.json())["error"]["type"] == "no_prompt"
    no_outputs = await client.post("/prompt", json={"prompt": {"1": image_prompt()["1"]}})
    assert (await no_outputs.json())["error"]["type"] == "prompt_no_outputs"
    unknown = await client.post(
        "/prompt", json={"prompt": {"1": {"class_type": "Missing", "inputs": {}}}}
    )
    assert (await unknown.json())["error"]["type"] == "invalid_prompt"


async def test_the_server_log_names_the_node_and_input_of_an_invalid_prompt(client, caplog):
    prompt = image_prompt()
    prompt["1"]["inputs"]["width"] = 0
    with caplog.at_level(logging.INFO, logger="loom_http.routes.execution"):
        response = await client.post("/prompt", json={"prompt": prompt})
    assert response.status == 400
    [logged] = [r.getMessage() for r in caplog.records if "invalid prompt" in r.getMessage()]
    assert logged.startswith("invalid prompt: Prompt outputs failed validation\n")
    assert "node 1 (EmptyImage): Value 0 smaller than min of 1: width" in logged


async def test_a_ui_workflow_posted_as_a_prompt_is_rejected_with_a_hint(client):
    ui_workflow = {
        "id": "0f6b3c1e",
        "last_node_id": 1,
        "nodes": [{"id": 1, "type": "EmptyImage", "inputs": [], "outputs": []}],
        "links": [],
        "version": 0.4,
    }
    response = await client.post("/prompt", json={"prompt": ui_workflow})
    assert response.status == 400
    error = (await response.json())["error"]
    # ComfyUI's rejection, word for word, plus what to do about it
    assert error["message"] == "Cannot execute because a node is missing the class_type property."
    assert error["details"] == "Node ID '#id'"
    assert "UI-format workflow" in error["extra_info"]["hint"]
    assert "Export (API)" in error["extra_info"]["hint"]


async def test_a_misspelt_node_type_gets_a_did_you_mean_hint(client):
    prompt = image_prompt()
    prompt["2"]["class_type"] = "imageinvert"
    response = await client.post("/prompt", json={"prompt": prompt})
    error = (await response.json())["error"]
    assert error["message"] == "Cannot execute because node imageinvert does not exist."
    assert error["extra_info"]["hint"] == "imageinvert: did you mean ImageInvert?"


async def test_partial_valid_prompt_returns_200_with_node_errors(client):
    prompt = image_prompt()
    prompt["5"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}
    body = await post_prompt(client, prompt)
    assert "5" in body["node_errors"]
    entry = await wait_history(client, body["prompt_id"])
    assert "5" not in entry["prompt"][4]


async def test_partial_execution_targets(client):
    body = await post_prompt(client, image_prompt(), partial_execution_targets=["4"])
    entry = await wait_history(client, body["prompt_id"])
    assert entry["prompt"][4] == ["4"] and list(entry["outputs"]) == ["4"]


@pytest.mark.parametrize("payload", [b"{not json", b"[1, 2]", b"", b"\xff\xfe"])
async def test_malformed_prompt_bodies_get_400_json(client, payload):
    response = await client.post(
        "/prompt", data=payload, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    body = await response.json()
    # ComfyUI's error object: its clients read error.type / error.message
    assert body["node_errors"] == {} and body["error"]["type"] == "invalid_json"
    assert body["error"]["message"] and set(body["error"]) == {
        "type",
        "message",
        "details",
        "extra_info",
    }


@pytest.mark.parametrize(
    "field",
    [
        {"number": "first"},
        {"extra_data": [1]},
        {"partial_execution_targets": "4"},
        {"prompt_id": 5},
    ],
)
async def test_bad_prompt_fields_get_400(client, field):
    response = await client.post("/prompt", json={"prompt": image_prompt(), **field})
    assert response.status == 400


async def test_non_object_prompt_is_rejected(client):
    response = await client.post("/prompt", json={"prompt": [1, 2, 3]})
    assert response.status == 400
    assert "error" in await response.json()


async def test_get_prompt_counts_queue(client):
    assert await (await client.get("/api/prompt")).json() == {"exec_info": {"queue_remaining": 0}}


async def test_preview_method_default_is_added(make_client):
    client = await make_client(preview_method="latent2rgb")
    body = await post_prompt(client, image_prompt())
    entry = await wait_history(client, body["prompt_id"])
    assert entry["prompt"][3]["preview_method"] == "latent2rgb"
    body = await post_prompt(client, image_prompt(color=1), extra_data={"preview_method": "none"})
    assert (await wait_history(client, body["prompt_id"]))["prompt"][3]["preview_method"] == "none"


async def test_queue_list_delete_clear(client):
    slow = await post_prompt(client, slow_prompt(steps=UNTIL_INTERRUPTED, delay=0.01, seed=11))
    await wait_running(client, slow["prompt_id"])
    ids = [(await post_prompt(client, image_prompt(color=c)))["prompt_id"] for c in (1, 2, 3)]
    queue = await (await client.get("/queue")).json()
    pending = {item[1] for item in queue["queue_pending"]}
    assert set(ids) <= pending and all(len(item) == 5 for item in queue["queue_pending"])
    assert (await client.post("/queue", json={"delete": [ids[0]]})).status == 200
    queue = await (await client.get("/api/queue")).json()
    assert ids[0] not in {item[1] for item in queue["queue_pending"]}
    assert (await client.post("/queue", json={"clear": True})).status == 200
    queue = await (await client.get("/queue")).json()
    assert queue["queue_pending"] == []
    assert [item[1] for item in queue["queue_running"]] == [slow["prompt_id"]]
    await client.post("/interrupt")
    await wait_history(client, slow["prompt_id"])
    assert (await client.post("/queue", json={"delete": "nope"})).status == 400
    assert (await client.post("/queue", data=b"{")).status == 400


async def test_history_max_items_offset_delete_clear(client):
    ids = []
    for color in range(4):
        ids.append((await post_prompt(client, image_prompt(color=color)))["prompt_id"])
        await wait_history(client, ids[-1])
    history = await (await client.get("/history")).json()
    assert list(history) == ids  # oldest first
    assert list(await (await client.get("/history?max_items=2")).json()) == ids[2:]
    assert list(await (await client.get("/history?max_items=1&offset=1")).json()) == ids[1:2]
    assert await (await client.get("/history/unknown")).json() == {}
    assert (await client.get("/history?max_items=x")).status == 400
    await client.post("/history", json={"delete": [ids[0]]})
    assert ids[0] not in await (await client.get("/api/history")).json()
    await client.post("/history", json={"clear": True})
    assert await (await client.get("/history")).json() == {}


async def test_interrupt_without_running_prompt_and_for_other_prompt(client):
    assert (await client.post("/interrupt")).status == 200
    assert (await client.post("/interrupt", json={"prompt_id": "not-running"})).status == 200
    assert (await client.post("/interrupt", data=b"{bad")).status == 400
    # a stale global interrupt does not break the next prompt
    body = await post_prompt(client, image_prompt(color=77))
    assert (await wait_history(client, body["prompt_id"]))["status"]["status_str"] == "success"


async def test_free(client):
    assert (
        await client.post("/free", json={"unload_models": True, "free_memory": True})
    ).status == 200
    assert (await client.post("/api/free")).status == 200
    assert (await client.post("/free", json=[1])).status == 400


async def test_jobs(client):
    ok = await post_prompt(
        client, image_prompt(), extra_data={"extra_pnginfo": {"workflow": {"id": "wf-1"}}}
    )
    failed = await post_prompt(client, raising_prompt())
    await wait_history(client, ok["prompt_id"])
    await wait_history(client, failed["prompt_id"])
    slow = await post_prompt(client, slow_prompt(steps=UNTIL_INTERRUPTED, delay=0.01, seed=5))
    await wait_running(client, slow["prompt_id"])  # so the interrupt below finds it running
    pending = await post_prompt(client, image_prompt(color=3))
    body = await (
        await client.get("/api/jobs?status=completed,failed,cancelled&limit=10&offset=0")
    ).json()
    statuses = {job["id"]: job["status"] for job in body["jobs"]}
    assert statuses == {ok["prompt_id"]: "completed", failed["prompt_id"]: "failed"}
    assert body["pagination"] == {"offset": 0, "limit": 10, "total": 2, "has_more": False}
    done = next(job for job in body["jobs"] if job["id"] == ok["prompt_id"])
    assert done["workflow_id"] == "wf-1" and done["outputs_count"] == 2
    assert done["preview_output"]["type"] == "output" and done["preview_output"]["nodeId"] == "4"
    assert done["execution_end_time"] >= done["execution_start_time"]
    err = next(job for job in body["jobs"] if job["id"] == failed["prompt_id"])
    assert err["execution_error"]["node_id"] == "2"
    everything = await (await client.get("/api/jobs")).json()
    kinds = {job["id"]: job["status"] for job in everything["jobs"]}
    assert kinds[pending["prompt_id"]] == "pending"
    assert kinds[slow["prompt_id"]] == "in_progress"
    one = await (await client.get(f"/api/jobs/{ok['prompt_id']}")).json()
    assert one["outputs"]["4"]["images"] and one["execution_status"]["status_str"] == "success"
    assert one["workflow"]["prompt"]["1"]["class_type"] == "EmptyImage"
    assert (await client.get("/api/jobs/nope")).status == 404
    page = await (
        await client.get("/api/jobs?status=completed,failed&limit=1&sort_order=asc")
    ).json()
    assert page["pagination"]["has_more"] is True and page["jobs"][0]["id"] == ok["prompt_id"]
    await client.post("/interrupt", json={"prompt_id": slow["prompt_id"]})
    await wait_history(client, slow["prompt_id"])
    cancelled = await (await client.get("/api/jobs?status=cancelled")).json()
    assert [job["id"] for job in cancelled["jobs"]] == [slow["prompt_id"]]
    for bad in ("status=bogus", "limit=0", "limit=x", "sort_by=name", "sort_order=up", "offset=-1"):
        response = await client.get(f"/api/jobs?{bad}")
        assert response.status == 400 and "error" in await response.json()
    assert (await client.get("/jobs")).status == 404  # /api/jobs only exists with the prefix


async def test_a_model_combo_with_no_files_names_the_folders_searched(client, runtime):
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.safetensors"}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 8, "height": 8}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}},
    }
    response = await client.post("/prompt", json={"prompt": prompt})
    assert response.status == 400
    (error,) = (await response.json())["node_errors"]["1"]["errors"]
    searched = [str(p) for p in runtime.folders.paths("checkpoints")]
    assert error["type"] == "value_not_in_list"
    assert error["details"].startswith("ckpt_name: 'x.safetensors' not in []")
    assert str(runtime.settings.models_dir / "checkpoints") in error["details"]
    assert error["extra_info"]["searched_folders"] == searched
