"""Re-extract bench/comfyui_0_8_io/frontend_1_35_9_names.json from an installed frontend package.

ComfyUI 0.8 pins ``comfyui-frontend-package==1.35.9``. Its main bundle
(``static/assets/index-*.js``) inlines the English node locale, generated from ComfyUI's own
/object_info when the frontend was built: one ``Id={display_name:..., inputs:{...}, outputs:{...}}``
declaration per node, gathered by ``enNodes={Id, Id, ...}``. This script finds that object, reads
each declaration with a small parser for the JavaScript literal subset the minifier writes, and
keeps the facts only (display name, input names in order, output names by index), no text.

Usage (in a venv where the package is installed with ``pip install --no-deps
comfyui-frontend-package==1.35.9``)::

    python bench/extract_frontend_names.py [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import re
from importlib import metadata, resources
from pathlib import Path
from typing import Any

PACKAGE = "comfyui-frontend-package"
OUT = Path(__file__).parent / "comfyui_0_8_io" / "frontend_1_35_9_names.json"
IDENT = re.compile(r"[A-Za-z_$][\w$]*")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class LiteralReader:
    """Reads one minified JavaScript object literal: identifier, string or number keys;
    string, number, null, boolean, identifier, array and object values."""

    def __init__(self, text: str, pos: int) -> None:
        self.text = text
        self.pos = pos

    def peek(self) -> str:
        return self.text[self.pos]

    def expect(self, char: str) -> None:
        if self.text[self.pos] != char:
            context = self.text[self.pos - 40 : self.pos + 40]
            raise ValueError(f"expected {char!r} at {self.pos}: {context!r}")
        self.pos += 1

    def string(self) -> str:
        quote = self.peek()
        self.pos += 1
        out = []
        while (char := self.text[self.pos]) != quote:
            if char == "\\":
                escape = self.text[self.pos + 1]
                if escape == "u":
                    out.append(chr(int(self.text[self.pos + 2 : self.pos + 6], 16)))
                    self.pos += 6
                    continue
                out.append({"n": "\n", "t": "\t", "r": "\r"}.get(escape, escape))
                self.pos += 2
                continue
            out.append(char)
            self.pos += 1
        self.pos += 1
        return "".join(out)

    def key(self) -> str:
        if self.peek() in "\"'`":
            return self.string()
        match = IDENT.match(self.text, self.pos) or NUMBER.match(self.text, self.pos)
        if not match:
            raise ValueError(f"no key at {self.pos}: {self.text[self.pos : self.pos + 40]!r}")
        self.pos = match.end()
        return match.group()

    def value(self) -> Any:
        char = self.peek()
        if char == "{":
            return self.object()
        if char == "[":
            self.pos += 1
            items = []
            while self.peek() != "]":
                items.append(self.value())
                if self.peek() == ",":
                    self.pos += 1
            self.pos += 1
            return items
        if char in "\"'`":
            return self.string()
        if self.text.startswith("!0", self.pos) or self.text.startswith("!1", self.pos):
            self.pos += 2
            return self.text[self.pos - 1] == "0"
        match = NUMBER.match(self.text, self.pos)
        if match:
            self.pos = match.end()
            return float(match.group()) if "." in match.group() else int(match.group())
        match = IDENT.match(self.text, self.pos)
        if not match:
            raise ValueError(f"no value at {self.pos}: {self.text[self.pos : self.pos + 40]!r}")
        self.pos = match.end()
        return {"null": None, "true": True, "false": False}.get(match.group(), match.group())

    def object(self) -> dict[str, Any]:
        """An object; a shorthand member ``{Name}`` maps to the identifier ``Name``."""
        self.expect("{")
        out: dict[str, Any] = {}
        while self.peek() != "}":
            name = self.key()
            if self.peek() == ":":
                self.pos += 1
                out[name] = self.value()
            else:
                out[name] = name
            if self.peek() == ",":
                self.pos += 1
        self.pos += 1
        return out


def english_node_locale(bundle: str) -> dict[str, dict[str, Any]]:
    """Every node's English locale entry, by node id, from the frontend's main bundle."""
    start = bundle.find("enNodes={")
    if start < 0:
        raise ValueError("the bundle holds no enNodes object")
    members = LiteralReader(bundle, start + len("enNodes=")).object()
    nodes: dict[str, dict[str, Any]] = {}
    for node_id, member in members.items():
        if isinstance(member, dict):
            nodes[node_id] = member
            continue
        declaration = re.search(rf"(?<![\w$.]){re.escape(member)}=\{{", bundle)
        if declaration is None:
            raise ValueError(f"{node_id}: no declaration of {member}")
        nodes[node_id] = LiteralReader(bundle, declaration.end() - 1).object()
    return nodes


def names_only(entry: dict[str, Any]) -> dict[str, Any]:
    """The facts of one locale entry: display name, input names in order, the widgets the
    frontend adds itself, and the names of outputs whose name is not their type."""
    real: list[str] = []
    added: list[str] = []
    for key, value in (entry.get("inputs") or {}).items():
        label = value.get("name")
        # Keys are normalized input names (``.`` -> ``_``); the English label is the input's own
        # name. A label that is not the key (``control after generate``, ``choose file to
        # upload``) or no label at all marks a widget the frontend adds.
        if label is not None and label.replace(".", "_") == key:
            real.append(label)
        else:
            added.append(key)
    outputs = entry.get("outputs") or {}
    return {
        "display_name": entry.get("display_name"),
        "inputs": real,
        "frontend_widgets": added,
        "outputs": {
            str(index): value["name"]
            for index, value in outputs.items()
            if isinstance(value, dict) and value.get("name") is not None
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    version = metadata.version(PACKAGE)
    assets = Path(str(resources.files("comfyui_frontend_package"))) / "static" / "assets"
    bundles = [p for p in sorted(assets.glob("index-*.js")) if "enNodes={" in p.read_text("utf-8")]
    if len(bundles) != 1:
        raise SystemExit(f"expected one bundle holding enNodes, found {bundles}")
    nodes = english_node_locale(bundles[0].read_text("utf-8"))
    source = f"{PACKAGE}=={version}, static/assets/{bundles[0].name} (enNodes)"
    lines = [
        f" {json.dumps(node_id)}: {json.dumps(names_only(entry), ensure_ascii=False)}"
        for node_id, entry in sorted(nodes.items())
    ]
    text = f'{{"source": {json.dumps(source)},\n"nodes": {{\n' + ",\n".join(lines) + "\n}}\n"
    args.out.write_text(text, encoding="utf-8")
    print(f"{len(nodes)} nodes -> {args.out}")


if __name__ == "__main__":
    main()
