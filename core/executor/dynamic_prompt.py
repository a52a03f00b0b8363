"""The live graph of a run, as nodes that take ComfyUI's ``DYNPROMPT`` hidden input see it."""

from __future__ import annotations

from typing import Any

from loom.executor.graph import Prompt


class DynamicPrompt:
    """The live graph of a run (ComfyUI's ``DYNPROMPT`` hidden input)."""

    def __init__(self, prompt: Prompt) -> None:
        self.original = prompt
        self.nodes: dict[str, dict[str, Any]] = dict(prompt)
        self.parent: dict[str, str] = {}

    def get_node(self, node_id: str) -> dict[str, Any]:
        return self.nodes[node_id]

    def has_node(self, node_id: str) -> bool:
        return node_id in self.nodes

    def all_node_ids(self) -> list[str]:
        return list(self.nodes)

    def get_original_prompt(self) -> Prompt:
        return self.original

    def get_parent_node_id(self, node_id: str) -> str | None:
        return self.parent.get(node_id)

    def get_real_node_id(self, node_id: str) -> str:
        while node_id in self.parent:
            node_id = self.parent[node_id]
        return node_id

    def get_display_node_id(self, node_id: str) -> str:
        return self.get_real_node_id(node_id)
