"""``comfy.model_management``: devices, memory and interruption, from Loom's runtime
(loom-comfy-compat)."""

from loom_comfy_compat.missing import module_getattr
from loom_comfy_compat.runtime_bridge import (
    InterruptProcessingException,
    get_autocast_device,
    get_free_memory,
    get_torch_device,
    get_torch_device_name,
    intermediate_device,
    interrupt_current_processing,
    is_device_cpu,
    is_device_cuda,
    is_device_mps,
    processing_interrupted,
    soft_empty_cache,
    text_encoder_device,
    text_encoder_offload_device,
    throw_exception_if_processing_interrupted,
    unet_offload_device,
    unload_all_models,
    vae_device,
    vae_offload_device,
    xformers_enabled,
)

__getattr__ = module_getattr(__name__)
__all__ = [
    "InterruptProcessingException",
    "get_autocast_device",
    "get_free_memory",
    "get_torch_device",
    "get_torch_device_name",
    "intermediate_device",
    "interrupt_current_processing",
    "is_device_cpu",
    "is_device_cuda",
    "is_device_mps",
    "processing_interrupted",
    "soft_empty_cache",
    "text_encoder_device",
    "text_encoder_offload_device",
    "throw_exception_if_processing_interrupted",
    "unet_offload_device",
    "unload_all_models",
    "vae_device",
    "vae_offload_device",
    "xformers_enabled",
]
