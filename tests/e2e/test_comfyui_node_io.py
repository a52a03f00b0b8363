"""Every node interface recorded in bench/comfyui_0_8_io/*.json (ComfyUI 0.8's inputs, defaults,
ranges and outputs, read from its source) is what Loom's /object_info serves for that node, and
its display, input and output names are those of the English node locale of the frontend 0.8
pins (bench/comfyui_0_8_io/frontend_1_35_9_names.json)."""

from __future__ import annotations

import importlib.util
import json
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from loom.nodes.spec import SECTIONS, NodeDef
from loom.testing import make_registry

BENCH_DIR = Path(__file__).parents[2] / "bench"
REFERENCE_DIR = BENCH_DIR / "comfyui_0_8_io"
FRONTEND_NAMES = REFERENCE_DIR / "frontend_1_35_9_names.json"
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"

# Where ComfyUI 0.8's source is newer than the frontend's locale (which was generated from the
# ComfyUI of its build): node -> the difference, which must still be there.
NEWER_THAN_FRONTEND_LOCALE = {
    # resolution_steps was added after the locale was built (recorded from 0.8-era source)
    "ImageScaleToTotalPixels": "inputs",
}


def reference_entries() -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for path in sorted(REFERENCE_DIR.glob("*.json")):
        if path == FRONTEND_NAMES:
            continue
        for node_id, entry in json.loads(path.read_text(encoding="utf-8")).items():
            assert node_id not in entries, f"{node_id} is recorded twice ({path.name})"
            entries[node_id] = entry
    return entries


def served_inputs(definition: NodeDef) -> list[tuple[str, str, str, dict[str, Any]]]:
    """The node's inputs as ``(section, name, type, options)``, combos as type COMBO; a
    DynamicCombo's ``options`` are its choices' keys, in order (what a saved workflow's
    widget value names and what a new node shows first)."""
    rows = []
    for section, inputs in definition.input_types(None).items():
        if section not in SECTIONS or section == "hidden":
            continue
        for name, spec in inputs.items():
            kind, options = spec[0], dict(spec[1]) if len(spec) > 1 else {}
            if isinstance(kind, (list, tuple)):
                options["options"] = list(kind)
                kind = "COMBO"
            elif kind == DYNAMIC_COMBO:
                options["options"] = [choice["key"] for choice in options.get("options", [])]
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


def test_a_reordered_dynamic_combo_is_reported(registry):
    entry = json.loads(json.dumps(reference_entries()["ResizeImageMaskNode"]))
    resize_type = next(row for row in entry["inputs"] if row[1] == "resize_type")
    keys = resize_type[3]["options"]
    assert keys[0] == "scale by multiplier" and len(keys) == 8  # ComfyUI 0.8's eight
    resize_type[3]["options"] = [keys[1], keys[0], *keys[2:], "scale to multiple"]
    found = interface_differences(entry, registry.nodes["ResizeImageMaskNode"])
    assert any("resize_type: options=" in d for d in found)


def frontend_locale() -> dict[str, dict[str, Any]]:
    return json.loads(FRONTEND_NAMES.read_text(encoding="utf-8"))["nodes"]


def name_differences(names: dict[str, Any], definition: NodeDef) -> dict[str, str]:
    """What differs between the frontend locale's names for a node and Loom's node, by kind
    (``display_name``, ``inputs``, ``outputs``). The locale names an output only where the
    output's name is not its type."""
    found: dict[str, str] = {}
    served_display = definition.display_name or definition.class_type
    if served_display != names["display_name"]:
        found["display_name"] = f"{names['display_name']!r} != served {served_display!r}"
    served = [name for _, name, _, _ in served_inputs(definition)]
    if served != names["inputs"]:
        found["inputs"] = f"{names['inputs']} != served {served}"
    wanted = [names["outputs"].get(str(i), o.type) for i, o in enumerate(definition.outputs)]
    served_outputs = [o.name for o in definition.outputs]
    beyond = [int(i) for i in names["outputs"] if int(i) >= len(definition.outputs)]
    if wanted != served_outputs or beyond:
        found["outputs"] = f"{names['outputs']} != served {served_outputs}"
    return found


def test_loom_names_nodes_inputs_and_outputs_as_the_frontend_locale_does(registry):
    """Display names, input names in order and output names match the English locale of
    comfyui-frontend-package 1.35.9 (what an English user of ComfyUI 0.8 sees) for every
    node Loom registers that the locale has."""
    locale = frontend_locale()
    assert {"KSampler", "CLIPTextEncodeSDXL", "GrowMask"} <= set(locale)
    problems = []
    for node_id, definition in sorted(registry.nodes.items()):
        if node_id not in locale:
            continue
        found = name_differences(locale[node_id], definition)
        expected = NEWER_THAN_FRONTEND_LOCALE.get(node_id)
        if expected is not None:
            assert expected in found, f"{node_id}: no longer differs from the locale's {expected}"
            del found[expected]
        problems += [f"{node_id}: {kind} {detail}" for kind, detail in found.items()]
    assert not problems, "\n".join(problems)


def test_a_renamed_input_or_output_is_reported(registry):
    names = json.loads(json.dumps(frontend_locale()["SamplerCustomAdvanced"]))
    assert names["outputs"] == {"0": "output", "1": "denoised_output"}
    definition = registry.nodes["SamplerCustomAdvanced"]
    assert name_differences(names, definition) == {}
    names["inputs"][1:3] = reversed(names["inputs"][1:3])
    names["outputs"]["1"] = "denoised"
    names["display_name"] = "Sampler Custom Advanced"
    assert set(name_differences(names, definition)) == {"display_name", "inputs", "outputs"}


def load_extractor():
    spec = importlib.util.spec_from_file_location(
        "extract_frontend_names", BENCH_DIR / "extract_frontend_names.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_extractor_reads_the_minified_locale_form():
    """The bundle form: one declaration per node, gathered by a shorthand ``enNodes`` object;
    input keys normalized (``.`` -> ``_``) with the real name as label; frontend widgets."""
    extractor = load_extractor()
    bundle = (
        'const a={x:1},Merge={display_name:"Merge \\"A\\"",inputs:{model1:{name:"model1"},'
        'img_in_:{name:"img_in.",tooltip:"It\'s {a}"},control_after_generate:{name:"control '
        'after generate"},"waiting for camera___":{}},outputs:{0:{tooltip:null},'
        '1:{name:"denoised_output",tooltip:null}}},Other={display_name:"Other"},'
        "enNodes={Merge,Other},b={}"
    )
    nodes = extractor.english_node_locale(bundle)
    assert list(nodes) == ["Merge", "Other"]
    assert extractor.names_only(nodes["Merge"]) == {
        "display_name": 'Merge "A"',
        "inputs": ["model1", "img_in."],
        "frontend_widgets": ["control_after_generate", "waiting for camera___"],
        "outputs": {"1": "denoised_output"},
    }
    assert extractor.names_only(nodes["Other"])["inputs"] == []
