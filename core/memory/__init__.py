"""Model memory: handles, devices and budgets, patches, cast layers, safetensors loading.

Everything a family plugin or sampler needs is importable from here::

    from loom.memory import ModelHandle, MemoryManager, ops, load_module

    unet, report = load_module(lambda: UNet(config, ops=ops), path)
    handle = ModelHandle(unet, name="sd15-unet", memory_estimator=estimate)
    manager.load([handle], extra_memory=handle.memory_estimate(x.shape, dtype))
    target = handle.compute_target  # the manager's answer: device and dtype
    out = unet(x.to(target.device, target.dtype))

Names are imported on first use, so ``loom.memory.allocator`` (run at start-up) does not
import torch; nothing here probes a device or changes state at import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "allocator": (
        "AllocatorPolicy",
        "AllocatorResult",
        "configure_host_allocator",
        "trim_host_memory",
    ),
    "cast": ("CastWeights", "cast_to", "ops", "set_compute_dtype"),
    "compute": ("ComputeTarget", "DtypeChoice", "compute_dtype_for", "merge_dtype_for"),
    "devices": (
        "DeviceInfo",
        "MemoryView",
        "cpu_device",
        "discover_devices",
        "free_bytes",
        "simulated_device",
    ),
    "handle": ("MemoryEstimator", "ModelHandle", "default_memory_estimate"),
    "loading": (
        "LoadPolicy",
        "LoadReport",
        "PrefixView",
        "build_on_meta",
        "load_into_module",
        "load_module",
        "open_safetensors",
        "split_state_dict_by_prefix",
    ),
    "books": ("Accounting", "Eviction", "ModelAccount"),
    "manager": ("MemoryManager",),
    "merged_cache": ("MergedWeightCache",),
    "merge": (
        "MergePatch",
        "MergeSite",
        "block_ratio",
        "merge_into",
        "merging_at",
        "patched_tensors",
        "ratio_scales",
        "stored_tensors",
    ),
    "patches": ("DiffPatch", "ReplacePatch", "ScalePatch", "WeightPatch", "value_shapes"),
    "safetensors_file": ("SafetensorsFile",),
    # torch-free: validation reads headers without importing torch
    "loom.safetensors_header": ("read_header",),
    "block_layers": ("MxFp8Linear", "NvFp4Linear"),
    "quant_layers": ("QuantLayoutError", "scale_layers"),
    "scaled": (
        "SCALE_TENSORS",
        "ScaledLayer",
        "ScaledLinear",
        "dequantized_weights",
        "is_scaled_fp8",
        "quant_config_tensors",
    ),
    "scaled_view": ("ScaledView",),
    "safetensors_writer": ("write_safetensors",),
    "quant_metadata": ("open_checkpoint_tensors", "with_quant_metadata"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "SCALE_TENSORS",
    "Accounting",
    "AllocatorPolicy",
    "AllocatorResult",
    "CastWeights",
    "ComputeTarget",
    "DeviceInfo",
    "DiffPatch",
    "DtypeChoice",
    "Eviction",
    "LoadPolicy",
    "LoadReport",
    "MemoryEstimator",
    "MemoryManager",
    "MemoryView",
    "MergePatch",
    "MergeSite",
    "MergedWeightCache",
    "ModelAccount",
    "ModelHandle",
    "MxFp8Linear",
    "NvFp4Linear",
    "PrefixView",
    "QuantLayoutError",
    "ReplacePatch",
    "SafetensorsFile",
    "ScalePatch",
    "ScaledLayer",
    "ScaledLinear",
    "ScaledView",
    "WeightPatch",
    "block_ratio",
    "build_on_meta",
    "cast_to",
    "compute_dtype_for",
    "configure_host_allocator",
    "cpu_device",
    "default_memory_estimate",
    "dequantized_weights",
    "discover_devices",
    "free_bytes",
    "is_scaled_fp8",
    "load_into_module",
    "load_module",
    "merge_dtype_for",
    "merge_into",
    "merging_at",
    "open_checkpoint_tensors",
    "open_safetensors",
    "ops",
    "patched_tensors",
    "quant_config_tensors",
    "ratio_scales",
    "read_header",
    "scale_layers",
    "set_compute_dtype",
    "simulated_device",
    "split_state_dict_by_prefix",
    "stored_tensors",
    "trim_host_memory",
    "value_shapes",
    "with_quant_metadata",
    "write_safetensors",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'loom.memory' has no attribute {name!r}")
    full = module if module.startswith("loom.") else f"loom.memory.{module}"
    value = getattr(importlib.import_module(full), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from loom.memory.allocator import (
        AllocatorPolicy,
        AllocatorResult,
        configure_host_allocator,
        trim_host_memory,
    )
    from loom.memory.block_layers import MxFp8Linear, NvFp4Linear
    from loom.memory.books import Accounting, Eviction, ModelAccount
    from loom.memory.cast import CastWeights, cast_to, ops, set_compute_dtype
    from loom.memory.compute import ComputeTarget, DtypeChoice, compute_dtype_for, merge_dtype_for
    from loom.memory.devices import (
        DeviceInfo,
        MemoryView,
        cpu_device,
        discover_devices,
        free_bytes,
        simulated_device,
    )
    from loom.memory.handle import MemoryEstimator, ModelHandle, default_memory_estimate
    from loom.memory.loading import (
        LoadPolicy,
        LoadReport,
        PrefixView,
        build_on_meta,
        load_into_module,
        load_module,
        open_safetensors,
        split_state_dict_by_prefix,
    )
    from loom.memory.manager import MemoryManager
    from loom.memory.merge import (
        MergePatch,
        MergeSite,
        block_ratio,
        merge_into,
        merging_at,
        ratio_scales,
        stored_tensors,
    )
    from loom.memory.patches import (
        DiffPatch,
        ReplacePatch,
        ScalePatch,
        WeightPatch,
        value_shapes,
    )
    from loom.memory.quant_layers import QuantLayoutError, scale_layers
    from loom.memory.quant_metadata import open_checkpoint_tensors, with_quant_metadata
    from loom.memory.safetensors_file import SafetensorsFile, read_header
    from loom.memory.safetensors_writer import write_safetensors
    from loom.memory.scaled import (
        SCALE_TENSORS,
        ScaledLayer,
        ScaledLinear,
        dequantized_weights,
        is_scaled_fp8,
        quant_config_tensors,
    )
    from loom.memory.scaled_view import ScaledView
