"""``comfy.comfy_types`` (loom-comfy-compat)."""

from comfy.comfy_types.node_typing import IO, ComfyNodeABC, InputTypeDict

__all__ = ["IO", "ComfyNodeABC", "InputTypeDict"]
