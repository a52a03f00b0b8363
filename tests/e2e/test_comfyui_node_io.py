"""Every node interface recorded in bench/comfyui_0_8_io/*.json (ComfyUI 0.8's inputs, defaults,
ranges and outputs, read from its source) is what Loom's /object_info serves for that node."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from loom.nodes.spec import SECTIONS, NodeDef
from loom.testing import make_registry

REFERENCE_DIR = Path(__file__).parents[2] / "bench" / "comfyui_0_8_io"


def reference_entries() -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for path in sorted(REFERENCE_DIR.glob("*.json")):
        for node_id, entry in json.loads(path.read_text(encoding="utf-8")).items():
            assert node_id not in entries, f"{node_id} is recorded twice ({path.name})"
            entries[node_id] = entry
    return entries


def served_inputs(definition: NodeDef) -> list[tuple[str, str, str, dict[str, Any]]]:
    """The node's inputs as ``(section, name, type, options)``, combos as type COMBO."""
    rows = []
    for section, inputs in definition.input_types(None).items():
        if section not in SECTIONS or section == "hidden":
            continue
        for name, spec in inputs.items():
            kind, options = spec[0], dict(spec[1]) if len(spec) > 1 else {}
            if isinstance(kind, (list, tuple)):
                options["options"] = list(kind)
                kind = "COMBO"
            rows.append((section, name, kind, options))
    return rows


def interface_differences(entry: dict[str, Any], definition: NodeDef) -> list[str]:
    """What differs between a recorded ComfyUI interface and the node Loom registers."""
    found: list[str] = []
    served = served_inputs(definition)
    recorded_names = [(section, name) for section, name, _, _ in entry["inputs"]]
    served_names = [(section, name) for section, name, _, _ in served]
    if recorded_names != served_names:
        found.append(f"inputs {recorded_names} != served {served_names}")
    by_name = {(section, name): (kind, options) for section, name, kind, options in served}
    for section, name, kind, options in entry["inputs"]:
        if (section, name) not in by_name:
            continue
        served_kind, served_options = by_name[section, name]
        if served_kind != kind:
            found.append(f"{section}.{name}: type {kind!r} != served {served_kind!r}")
        for key, value in options.items():
            if key not in served_options:
                found.append(f"{section}.{name}: {key}={value!r} missing")
            elif served_options[key] != value:
                found.append(f"{section}.{name}: {key}={value!r} != served {served_options[key]!r}")
    outputs = [[o.type, o.name, o.is_list] for o in definition.outputs]
    if outputs != entry["outputs"]:
        found.append(f"outputs {entry['outputs']} != served {outputs}")
    if "display_name" in entry:
        served_display = definition.display_name or definition.class_type
        if served_display != entry["display_name"]:
            found.append(f"display_name {entry['display_name']!r} != {served_display!r}")
    for flag in ("output_node", "deprecated", "experimental"):
        if flag in entry and bool(getattr(definition, flag)) != entry[flag]:
            found.append(f"{flag} {entry[flag]} != served {bool(getattr(definition, flag))}")
    return found


@pytest.fixture(scope="module")
def registry():
    plugins = sorted({entry.name for entry in metadata.entry_points(group="loom")})
    return make_registry(*plugins)


def test_every_recorded_comfyui_interface_is_what_loom_serves(registry):
    entries = reference_entries()
    assert {"KSampler", "EmptyLatentImage"} <= set(entries)
    problems = []
    for node_id, entry in entries.items():
        assert {"source", "inputs", "outputs"} <= set(entry), node_id
        if node_id not in registry.nodes:
            problems.append(f"{node_id}: recorded but Loom registers no such node")
            continue
        problems += [
            f"{node_id}: {d}" for d in interface_differences(entry, registry.nodes[node_id])
        ]
    assert not problems, "\n".join(problems)


def test_every_node_loom_registers_has_its_comfyui_interface_recorded(registry):
    """A new node comes with its ComfyUI interface in bench/comfyui_0_8_io, so it is checked too."""
    unrecorded = sorted(set(registry.nodes) - set(reference_entries()))
    assert not unrecorded, f"record these in bench/comfyui_0_8_io/*.json: {unrecorded}"


def test_a_changed_default_is_reported(registry):
    entry = reference_entries()["EmptyLatentImage"]
    changed = json.loads(json.dumps(entry))
    changed["inputs"][0][3]["default"] = 1024
    changed["outputs"] = [["LATENT", "samples", False]]
    found = interface_differences(changed, registry.nodes["EmptyLatentImage"])
    assert any("width: default=1024" in d for d in found)
    assert any(d.startswith("outputs") for d in found)
