"""ComfyUI's ``nodes`` module (loom-comfy-compat): MAX_RESOLUTION, live NODE_CLASS_MAPPINGS,
core node classes with ComfyUI's call signatures backed by Loom's nodes, SaveImage /
PreviewImage to subclass, common_ksampler, interrupt_processing."""

from loom_comfy_compat import core_nodes as _core
from loom_comfy_compat.core_nodes import (
    MAX_RESOLUTION,
    PreviewImage,
    SaveImage,
    common_ksampler,
)
from loom_comfy_compat.missing import missing as _missing
from loom_comfy_compat.runtime_bridge import (
    interrupt_current_processing as _interrupt,
)
from loom_comfy_compat.runtime_bridge import (
    throw_exception_if_processing_interrupted as before_node_execution,
)

NODE_CLASS_MAPPINGS = _core.LiveClassMappings()
NODE_DISPLAY_NAME_MAPPINGS = _core.LiveDisplayNames()
EXTENSION_WEB_DIRS = {}


def interrupt_processing(value=True):
    _interrupt(value)


def __getattr__(name):
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(name)
    if _core.is_known(name):
        return _core.node_class(name)
    return _missing(__name__, name)


__all__ = [
    "MAX_RESOLUTION",
    "NODE_CLASS_MAPPINGS",
    "NODE_DISPLAY_NAME_MAPPINGS",
    "PreviewImage",
    "SaveImage",
    "before_node_execution",
    "common_ksampler",
    "interrupt_processing",
]
