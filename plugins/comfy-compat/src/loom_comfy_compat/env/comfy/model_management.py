"""``comfy.model_management``: devices, memory and interruption, from Loom's runtime
(loom-comfy-compat)."""

from loom_comfy_compat.missing import module_getattr
from loom_comfy_compat.runtime_bridge import (
    InterruptProcessingException,
    get_free_memory,
    get_torch_device,
    get_torch_device_name,
    intermediate_device,
    interrupt_current_processing,
    processing_interrupted,
    soft_empty_cache,
    throw_exception_if_processing_interrupted,
    unet_offload_device,
    unload_all_models,
)

__getattr__ = module_getattr(__name__)
__all__ = [
    "InterruptProcessingException",
    "get_free_memory",
    "get_torch_device",
    "get_torch_device_name",
    "intermediate_device",
    "interrupt_current_processing",
    "processing_interrupted",
    "soft_empty_cache",
    "throw_exception_if_processing_interrupted",
    "unet_offload_device",
    "unload_all_models",
]
