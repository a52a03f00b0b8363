"""`loom nodes --compare`: which node types of a ComfyUI /object_info dump Loom lacks."""

from __future__ import annotations

import json

import pytest

from loom.cli.main import main
from loom.nodes.coverage import CategoryCoverage, compare_object_info, format_coverage

# A hand-made dump in /object_info's shape: three node types Loom's core has, four it lacks
# (invented ids, so no future node can make them present), one without a category.
REFERENCE = {
    "EmptyImage": {"category": "image", "input": {}},
    "ImageBlur": {"category": "image/postprocessing", "input": {}},
    "InvertMask": {"category": "mask", "input": {}},
    "ZzImageOnlyInComfy": {"category": "image/transform", "input": {}},
    "ZzMaskOnlyInComfy": {"category": "mask/compositing", "input": {}},
    "ZzAudioOnlyInComfy": {"category": "audio", "input": {}},
    "ZzApiOnlyInComfy": {"category": "api node/image/Example", "input": {}},
    "ZzNoCategory": {"input": {}},
}


def test_compare_groups_by_top_level_category():
    report = compare_object_info(REFERENCE, ["EmptyImage", "ImageBlur", "InvertMask", "Loomish"])
    assert report.categories == (
        CategoryCoverage("(none)", 1, ("ZzNoCategory",)),
        CategoryCoverage("api node", 1, ("ZzApiOnlyInComfy",)),
        CategoryCoverage("audio", 1, ("ZzAudioOnlyInComfy",)),
        CategoryCoverage("image", 3, ("ZzImageOnlyInComfy",)),
        CategoryCoverage("mask", 2, ("ZzMaskOnlyInComfy",)),
    )
    assert (report.total, report.missing, report.extra) == (8, 5, ("Loomish",))
    text = format_coverage(report)
    assert text.splitlines()[0] == "Loom has 3 of the reference's 8 node types (37.5%); 5 missing."
    assert "image                         2      3        1" in text
    assert "missing in mask (1):\n  ZzMaskOnlyInComfy" in text
    assert text.endswith("Loom-only node types (1): Loomish")


def test_cli_compare_prints_the_report(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOOM_BASE_DIRECTORY", raising=False)
    (tmp_path / "object_info.json").write_text(json.dumps(REFERENCE))
    assert main(["nodes", "--compare", "object_info.json"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Loom has 3 of the reference's 8 node types (37.5%); 5 missing.")
    assert "missing in audio (1):\n  ZzAudioOnlyInComfy" in out
    loom_only = next(line for line in out.splitlines() if line.startswith("Loom-only"))
    assert "ImageInvert" in loom_only and "EmptyImage" not in loom_only


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "expected ComfyUI's /object_info"),
        ('{"A": 3}', "expected ComfyUI's /object_info"),
        ("{not json", "is not valid JSON"),
    ],
)
def test_cli_compare_rejects_other_documents_naming_the_file(
    tmp_path, monkeypatch, capsys, content, message
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dump.json").write_text(content)
    assert main(["nodes", "--compare", "dump.json"]) == 1
    err = capsys.readouterr().err
    assert "dump.json" in err and message in err and "Traceback" not in err


# The node-list form of bench/comfyui_0_8_nodes.json: out-of-scope node types carry a reason;
# a real /object_info dump marks API nodes with "api_node": true.
NODE_LIST = {
    "EmptyImage": {"category": "image", "python_module": "nodes", "v3": False},
    "ZzImageOnlyInComfy": {"category": "image/transform", "python_module": "x", "v3": True},
    "ZzVideoOnlyInComfy": {"category": "image/video", "v3": True, "excluded": "video"},
    "ZzApiOnlyInComfy": {"category": "image/api", "api_node": True},
    "InvertMask": {"category": "mask", "python_module": "comfy_extras.nodes_mask", "v3": True},
    "ZzAudioOnlyInComfy": {"category": "audio", "excluded": "audio"},
}


def test_out_of_scope_nodes_are_counted_apart_with_their_reason():
    report = compare_object_info(NODE_LIST, ["EmptyImage", "InvertMask"])
    image = next(c for c in report.categories if c.category == "image")
    assert image.out_of_scope == ("ZzApiOnlyInComfy", "ZzVideoOnlyInComfy")
    assert (image.scope_total, image.scope_missing) == (2, ("ZzImageOnlyInComfy",))
    assert report.in_scope() == (2, 3)
    assert report.in_scope(["mask"]) == (1, 1)
    assert report.in_scope(["image", "audio"]) == (1, 2)
    text = format_coverage(report)
    assert "In scope (3 left out: API, video, audio, 3D, other model families...): " in text
    assert "2 of 3 (66.7%)." in text
    assert "  ZzImageOnlyInComfy  (not built yet)" in text
    assert "  ZzVideoOnlyInComfy  (video)" in text
    assert "  ZzApiOnlyInComfy  (API node)" in text
