"""ComfyUI's string utility nodes (``comfy_extras/nodes_string.py``): concatenate, substring,
length, case, trim, replace, contains, compare and the regular-expression nodes.

Text inputs without a ``default`` option are declared as in ComfyUI (its V3 schema omits
unset defaults). An invalid pattern makes RegexMatch answer False and RegexExtract answer "",
as in ComfyUI; RegexReplace, which ComfyUI lets fail with a traceback, names the pattern.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import loom

ui = loom.ui
CATEGORY = "utils/string"


def _text(**options: object) -> str:
    return ui.string(None, multiline=True, **options)


def regex_flags(case_insensitive: bool, multiline: bool, dotall: bool) -> int:
    """The ``re`` flags the three boolean widgets stand for."""
    flags = re.IGNORECASE if case_insensitive else 0
    if multiline:
        flags |= re.MULTILINE
    if dotall:
        flags |= re.DOTALL
    return flags


@loom.node("StringConcatenate", category=CATEGORY, display_name="Concatenate", v3=True)
class StringConcatenate:
    string_a: str = _text()
    string_b: str = _text()
    delimiter: str = ui.string("", multiline=False)

    def run(self, ctx: loom.RunContext) -> str:
        return self.delimiter.join((self.string_a, self.string_b))


@loom.node("StringSubstring", category=CATEGORY, display_name="Substring", v3=True)
class StringSubstring:
    string: str = _text()
    start: int = ui.int(None)
    end: int = ui.int(None)

    def run(self, ctx: loom.RunContext) -> str:
        return self.string[self.start : self.end]


@loom.node(
    "StringLength",
    category=CATEGORY,
    display_name="Length",
    outputs=[loom.OutputDef("INT", "length")],
    v3=True,
)
class StringLength:
    string: str = _text()

    def run(self, ctx: loom.RunContext) -> int:
        return len(self.string)


CASE_MODES = ("UPPERCASE", "lowercase", "Capitalize", "Title Case")


@loom.node("CaseConverter", category=CATEGORY, display_name="Case Converter", v3=True)
class CaseConverter:
    string: str = _text()
    mode: str = ui.combo(CASE_MODES)

    def run(self, ctx: loom.RunContext) -> str:
        convert = {
            "UPPERCASE": str.upper,
            "lowercase": str.lower,
            "Capitalize": str.capitalize,
            "Title Case": str.title,
        }
        return convert[self.mode](self.string)


TRIM_MODES = ("Both", "Left", "Right")


@loom.node("StringTrim", category=CATEGORY, display_name="Trim", v3=True)
class StringTrim:
    string: str = _text()
    mode: str = ui.combo(TRIM_MODES)

    def run(self, ctx: loom.RunContext) -> str:
        trim = {"Both": str.strip, "Left": str.lstrip, "Right": str.rstrip}
        return trim[self.mode](self.string)


@loom.node("StringReplace", category=CATEGORY, display_name="Replace", v3=True)
class StringReplace:
    string: str = _text()
    find: str = _text()
    replace: str = _text()

    def run(self, ctx: loom.RunContext) -> str:
        return self.string.replace(self.find, self.replace)


@loom.node(
    "StringContains",
    category=CATEGORY,
    display_name="Contains",
    outputs=[loom.OutputDef("BOOLEAN", "contains")],
    v3=True,
)
class StringContains:
    string: str = _text()
    substring: str = _text()
    case_sensitive: bool = ui.boolean(True)

    def run(self, ctx: loom.RunContext) -> bool:
        if self.case_sensitive:
            return self.substring in self.string
        return self.substring.lower() in self.string.lower()


COMPARE_MODES = ("Starts With", "Ends With", "Equal")


@loom.node("StringCompare", category=CATEGORY, display_name="Compare", v3=True)
class StringCompare:
    string_a: str = _text()
    string_b: str = _text()
    mode: str = ui.combo(COMPARE_MODES)
    case_sensitive: bool = ui.boolean(True)

    def run(self, ctx: loom.RunContext) -> bool:
        a, b = self.string_a, self.string_b
        if not self.case_sensitive:
            a, b = a.lower(), b.lower()
        if self.mode == "Starts With":
            return a.startswith(b)
        if self.mode == "Ends With":
            return a.endswith(b)
        return a == b


@loom.node(
    "RegexMatch",
    category=CATEGORY,
    display_name="Regex Match",
    outputs=[loom.OutputDef("BOOLEAN", "matches")],
    v3=True,
)
class RegexMatch:
    string: str = _text()
    regex_pattern: str = _text()
    case_insensitive: bool = ui.boolean(True)
    multiline: bool = ui.boolean(False)
    dotall: bool = ui.boolean(False)

    def run(self, ctx: loom.RunContext) -> bool:
        flags = regex_flags(self.case_insensitive, self.multiline, self.dotall)
        try:
            return re.search(self.regex_pattern, self.string, flags) is not None
        except re.error:
            return False


EXTRACT_MODES = ("First Match", "All Matches", "First Group", "All Groups")


@loom.node("RegexExtract", category=CATEGORY, display_name="Regex Extract", v3=True)
class RegexExtract:
    string: str = _text()
    regex_pattern: str = _text()
    mode: str = ui.combo(EXTRACT_MODES)
    case_insensitive: bool = ui.boolean(True)
    multiline: bool = ui.boolean(False)
    dotall: bool = ui.boolean(False)
    group_index: int = ui.int(1, min=0, max=100)

    def run(self, ctx: loom.RunContext) -> str:
        flags = regex_flags(self.case_insensitive, self.multiline, self.dotall)
        try:
            pattern = re.compile(self.regex_pattern, flags)
        except re.error:
            return ""
        return "\n".join(self._extract(pattern))

    def _extract(self, pattern: re.Pattern[str]) -> list[str]:
        group = self.group_index
        if self.mode == "First Match":
            match = pattern.search(self.string)
            return [match.group(0)] if match else []
        if self.mode == "All Matches":
            # findall gives tuples when the pattern has groups; ComfyUI keeps each tuple's first.
            found = pattern.findall(self.string)
            return [item[0] if isinstance(item, tuple) else item for item in found]
        if self.mode == "First Group":
            match = pattern.search(self.string)
            return [match.group(group)] if match and len(match.groups()) >= group else []
        return [
            m.group(group)
            for m in pattern.finditer(self.string)
            if m.groups() and len(m.groups()) >= group
        ]


@loom.node("RegexReplace", category=CATEGORY, display_name="Regex Replace", v3=True)
class RegexReplace:
    """Find and replace text using regex patterns."""

    string: str = _text()
    regex_pattern: str = _text()
    replace: str = _text()
    case_insensitive: bool = ui.boolean(True, optional=True)
    multiline: bool = ui.boolean(False, optional=True)
    dotall: bool = ui.boolean(
        False,
        optional=True,
        tooltip="When enabled, the dot (.) character will match any character including "
        "newline characters. When disabled, dots won't match newlines.",
    )
    count: int = ui.int(
        0,
        min=0,
        max=100,
        optional=True,
        tooltip="Maximum number of replacements to make. Set to 0 to replace all occurrences "
        "(default). Set to 1 to replace only the first match, 2 for the first two matches, etc.",
    )

    def run(self, ctx: loom.RunContext) -> str:
        flags = regex_flags(self.case_insensitive, self.multiline, self.dotall)
        try:
            return re.sub(
                self.regex_pattern, self.replace, self.string, count=self.count, flags=flags
            )
        except re.error as exc:
            raise ValueError(
                f"RegexReplace: regex_pattern {self.regex_pattern!r} or replace "
                f"{self.replace!r} is not valid: {exc}"
            ) from exc


# ComfyUI's registration order.
NODES: tuple[type, ...] = (
    StringConcatenate,
    StringSubstring,
    StringLength,
    CaseConverter,
    StringTrim,
    StringReplace,
    StringContains,
    StringCompare,
    RegexMatch,
    RegexExtract,
    RegexReplace,
)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in NODES:
        register(node_class, python_module="comfy_extras.nodes_string")
