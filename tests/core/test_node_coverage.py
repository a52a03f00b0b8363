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
