"""ComfyUI's string utility nodes, run through the real registry."""

from __future__ import annotations

import pytest
from loom_builtin_harness import make_ctx, object_info_of, run_one

from loom.nodes.builtin.strings import NODES


@pytest.fixture
def ctx(tmp_path):
    return make_ctx(tmp_path)


def test_concatenate_substring_length(ctx):
    assert run_one("StringConcatenate", ctx, string_a="a", string_b="b", delimiter=", ") == "a, b"
    assert run_one("StringSubstring", ctx, string="loom nodes", start=5, end=-1) == "node"
    assert run_one("StringLength", ctx, string="héllo") == 5


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("UPPERCASE", "HELLO WORLD"),
        ("lowercase", "hello world"),
        ("Capitalize", "Hello world"),
        ("Title Case", "Hello World"),
    ],
)
def test_case_converter(ctx, mode, expected):
    assert run_one("CaseConverter", ctx, string="hELLo world", mode=mode) == expected


def test_trim_replace_contains_compare(ctx):
    assert run_one("StringTrim", ctx, string="  x \n", mode="Both") == "x"
    assert run_one("StringTrim", ctx, string="  x \n", mode="Left") == "x \n"
    assert run_one("StringTrim", ctx, string="  x \n", mode="Right") == "  x"
    assert run_one("StringReplace", ctx, string="a-b-c", find="-", replace="+") == "a+b+c"
    assert (
        run_one("StringContains", ctx, string="Loom", substring="OO", case_sensitive=True) is False
    )
    assert (
        run_one("StringContains", ctx, string="Loom", substring="OO", case_sensitive=False) is True
    )
    compare = {"string_a": "Portrait.png", "string_b": "portrait", "case_sensitive": False}
    assert run_one("StringCompare", ctx, mode="Starts With", **compare) is True
    assert run_one("StringCompare", ctx, mode="Equal", **compare) is False
    assert run_one("StringCompare", ctx, mode="Ends With", **{**compare, "string_b": ".PNG"})
    assert not run_one(
        "StringCompare",
        ctx,
        mode="Ends With",
        **{**compare, "string_b": ".PNG", "case_sensitive": True},
    )


def regex(ctx, node, **inputs):
    flags = {"case_insensitive": True, "multiline": False, "dotall": False}
    return run_one(node, ctx, **{**flags, **inputs})


def test_regex_match_and_invalid_pattern(ctx):
    assert regex(ctx, "RegexMatch", string="Seed 42", regex_pattern=r"seed \d+") is True
    assert (
        regex(ctx, "RegexMatch", string="Seed 42", regex_pattern=r"seed", case_insensitive=False)
        is False
    )
    assert regex(ctx, "RegexMatch", string="a\nb", regex_pattern=r"a.b") is False
    assert regex(ctx, "RegexMatch", string="a\nb", regex_pattern=r"a.b", dotall=True) is True
    assert regex(ctx, "RegexMatch", string="x", regex_pattern="(") is False


@pytest.mark.parametrize(
    ("mode", "group_index", "expected"),
    [
        ("First Match", 1, "w=512"),
        ("All Matches", 1, "w\nh"),  # findall with groups: each tuple's first item
        ("First Group", 2, "512"),
        ("All Groups", 2, "512\n768"),
        ("First Group", 3, ""),  # no such group
    ],
)
def test_regex_extract_modes(ctx, mode, group_index, expected):
    out = regex(
        ctx,
        "RegexExtract",
        string="w=512, h=768",
        regex_pattern=r"(\w)=(\d+)",
        mode=mode,
        group_index=group_index,
    )
    assert out == expected


def test_regex_replace_count_and_bad_pattern(ctx):
    assert (
        regex(ctx, "RegexReplace", string="A a a", regex_pattern="a", replace="b", count=2)
        == "b b a"
    )
    assert run_one("RegexReplace", ctx, string="A a", regex_pattern="a", replace="b") == "b b"
    with pytest.raises(ValueError, match=r"RegexReplace: regex_pattern '\(' .* not valid"):
        run_one("RegexReplace", ctx, string="x", regex_pattern="(", replace="")


def test_object_info_matches_comfyui_schemas():
    assert [node.__loom_node__.class_type for node in NODES] == [
        "StringConcatenate",
        "StringSubstring",
        "StringLength",
        "CaseConverter",
        "StringTrim",
        "StringReplace",
        "StringContains",
        "StringCompare",
        "RegexMatch",
        "RegexExtract",
        "RegexReplace",
    ]
    concat = object_info_of("StringConcatenate")
    assert concat["input"]["required"] == {
        "string_a": ["STRING", {"multiline": True}],
        "string_b": ["STRING", {"multiline": True}],
        "delimiter": ["STRING", {"default": "", "multiline": False}],
    }
    assert concat["display_name"] == "Concatenate" and concat["category"] == "utils/string"
    assert concat["python_module"] == "comfy_extras.nodes_string"
    length = object_info_of("StringLength")
    assert length["output"] == ["INT"] and length["output_name"] == ["length"]
    assert object_info_of("StringContains")["output_name"] == ["contains"]
    assert object_info_of("StringCompare")["output"] == ["BOOLEAN"]
    assert object_info_of("RegexMatch")["output_name"] == ["matches"]
    extract = object_info_of("RegexExtract")
    assert extract["input_order"]["required"] == [
        "string",
        "regex_pattern",
        "mode",
        "case_insensitive",
        "multiline",
        "dotall",
        "group_index",
    ]
    assert extract["input"]["required"]["group_index"] == [
        "INT",
        {"default": 1, "min": 0, "max": 100},
    ]
    replace = object_info_of("RegexReplace")
    assert replace["input_order"] == {
        "required": ["string", "regex_pattern", "replace"],
        "optional": ["case_insensitive", "multiline", "dotall", "count"],
    }
    assert replace["description"] == "Find and replace text using regex patterns."
    assert object_info_of("StringSubstring")["input"]["required"]["start"] == ["INT", {}]
