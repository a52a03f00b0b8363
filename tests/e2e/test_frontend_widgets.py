"""Loom's UI→API conversion against the real ComfyUI frontend, for every registered node.

``data/frontend_<version>_widgets.json`` is what that frontend (1.35.9: ComfyUI 0.8's pin;
1.58.1: the newest) saved and sent for a graph holding one node of every type Loom serves,
each widget set to a distinct non-default value (``plugins/http/browser-tests/widgets.mjs``;
regenerate with ``nox -s widgets``; Chromium's fake camera gives WebcamCapture a frame). Which
``widgets_values`` position belongs to which input is the frontend's decision, so its
``graphToPrompt`` output is the reference.
"""

from __future__ import annotations

import copy
import json
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs
import pytest

from loom.testing import make_registry
from loom.workflow import convert_workflow

DATA = Path(__file__).parent / "data"
FRONTENDS = ["1.35.9", "1.58.1"]

#: Inputs the frontend's own extensions add as widgets and send, which no node declares
#: (ComfyUI and Loom both ignore undeclared inputs): PreviewAny's preview text and mode
#: toggle, the remote combo's refresh button, CustomCombo's option texts.
FRONTEND_ONLY = {
    "PreviewAny": {"preview", "previewMode"},
    "LoadImageOutput": {"refresh"},
    "CustomCombo": {"option0", "option1", "index"},
}

#: Inputs whose sent value is made when the prompt is queued, so no saved workflow holds it:
#: WebcamCapture's image is the name of the frame the frontend captured and uploaded then
#: (the record's browser had Chromium's fake camera). test_webcam_capture_... checks it.
QUEUE_TIME_UPLOADS = {"WebcamCapture": {"image"}}
WEBCAM_UPLOAD = re.compile(r"webcam/\d+\.png \[temp\]")


@pytest.fixture(scope="module")
def registry():
    plugins = sorted({entry.name for entry in metadata.entry_points(group="loom")})
    return make_registry(*plugins)


@pytest.fixture(scope="module", params=FRONTENDS)
def record(request) -> dict[str, Any]:
    recorded = json.loads(
        (DATA / f"frontend_{request.param.replace('.', '_')}_widgets.json").read_text()
    )
    assert recorded["frontend"] == request.param
    return recorded


def widget_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """An API node's inputs less its links (``[node_id, output_index]``)."""
    return {
        name: value
        for name, value in inputs.items()
        if not (
            isinstance(value, list)
            and len(value) == 2
            and isinstance(value[0], str)
            and isinstance(value[1], int)
        )
    }


def differences(record: dict[str, Any], registry) -> list[str]:
    """One line per node whose converted widget inputs differ from the frontend's."""
    converted = convert_workflow(copy.deepcopy(record["workflow"]), registry)
    found = []
    for node_id, expected in sorted(record["api"].items(), key=lambda item: int(item[0])):
        ours = converted.get(node_id)
        label = f"node {node_id} ({expected['class_type']})"
        if ours is None:
            found.append(f"{label}: missing from Loom's prompt")
            continue
        got = widget_inputs(ours["inputs"])
        extra = FRONTEND_ONLY.get(expected["class_type"], set())
        uploaded = QUEUE_TIME_UPLOADS.get(expected["class_type"], set())
        got = {k: v for k, v in got.items() if k not in uploaded}
        want = {k: v for k, v in expected["inputs"].items() if k not in extra | uploaded}
        for name in sorted(set(got) | set(want)):
            if name not in want and got[name] is None:
                # A combo with no options: its value was undefined, which graphToPrompt
                # drops and the saved workflow (JSON has no undefined) holds as null.
                continue
            if name not in got:
                found.append(f"{label}: {name} missing, frontend sends {want[name]!r}")
            elif name not in want:
                found.append(f"{label}: {name}={got[name]!r} not sent by the frontend")
            elif got[name] != want[name]:
                found.append(f"{label}: {name}={got[name]!r}, frontend sends {want[name]!r}")
    return found


def test_the_record_covers_every_node_loom_registers(record, registry):
    recorded = {node["type"] for node in record["workflow"]["nodes"]}
    assert sorted(set(registry.nodes) - recorded) == []
    assert record["not_recorded"] == []


def test_webcam_capture_sends_the_frame_it_uploaded_at_queue_time(record, registry):
    (node,) = [n for n in record["workflow"]["nodes"] if n["type"] == "WebcamCapture"]
    sent = record["api"][str(node["id"])]["inputs"]
    # capture_on_queue was turned off and a frame captured: the frontend uploaded it to the
    # input folder's temp/webcam and sends its annotated name; the saved workflow keeps the
    # widget's own empty value in image's slot (the capture button's label trails it)
    assert WEBCAM_UPLOAD.fullmatch(sent["image"]), sent
    assert sent["capture_on_queue"] is False
    assert node["widgets_values"][0] == ""
    converted = convert_workflow(copy.deepcopy(record["workflow"]), registry)[str(node["id"])]
    assert converted["inputs"] == {**sent, "image": ""}


def test_every_node_converts_to_the_frontend_s_widget_inputs(record, registry):
    found = differences(record, registry)
    frontend = record["frontend"]
    assert not found, f"{len(found)} differences from frontend {frontend}:\n" + "\n".join(found)


class _SwappedInputs:
    """A node implementation whose INPUT_TYPES lists two required inputs the other way round."""

    def __init__(self, impl, first: str, second: str) -> None:
        self._impl = impl
        self._pair = (first, second)

    def input_types(self, env):
        types = copy.deepcopy(self._impl.input_types(env))
        required = types["required"]
        first, second = self._pair
        keys = [second if k == first else first if k == second else k for k in required]
        swapped = dict(required)
        types["required"] = {key: swapped[key] for key in keys}
        return types

    def __getattr__(self, name):
        return getattr(self._impl, name)


def test_a_widget_order_mistake_is_reported(record, registry, monkeypatch):
    definition = registry.nodes["EmptyImage"]
    swapped = attrs.evolve(definition, impl=_SwappedInputs(definition.impl, "width", "height"))
    monkeypatch.setitem(registry.nodes, "EmptyImage", swapped)
    found = differences(record, registry)
    assert [line.split(":")[1].split("=")[0].strip() for line in found] == ["height", "width"]
    assert all("(EmptyImage)" in line for line in found)
