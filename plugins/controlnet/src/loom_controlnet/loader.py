"""A ControlNet file -> a :class:`ControlNetModel` (the CONTROL_NET socket value).

The file is read memory-mapped; the module is built on the meta device and the mapped
tensors assigned (no random init, no copy). Files that are not a ControlNet in a layout this
plugin knows are refused with a message naming the file and what it looks like instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from loom.errors import ModelFileError
from loom.memory import LoadPolicy, ModelHandle, build_on_meta, load_into_module, open_safetensors
from loom_controlnet.adapter import (
    AdapterConfig,
    T2IAdapter,
    adapter_config,
    diffusers_blocks,
    is_adapter,
    original_keys,
)
from loom_controlnet.convert import (
    Layout,
    RenamedView,
    detect_layout,
    diffusers_config,
    diffusers_names,
    file_keys,
    original_config,
    union_types,
)
from loom_controlnet.model import ControlNet, ControlNetConfig

log = logging.getLogger(__name__)

#: ComfyUI's rule: a file named ``*_shuffle`` averages its residuals over space.
SHUFFLE_SUFFIXES = ("_shuffle", "_shuffle_fp16")


@attrs.frozen
class ControlNetModel:
    """A loaded ControlNet, not bound to a hint yet (the CONTROL_NET socket value).

    ``control_type`` is what ``SetUnionControlNetType`` chose (``None``: auto); only union
    ControlNets read it, as in ComfyUI.
    """

    handle: ModelHandle
    config: ControlNetConfig
    file: str
    global_average_pooling: bool = False
    control_type: int | None = None

    @property
    def module(self) -> ControlNet:
        return self.handle.module  # type: ignore[return-value]

    @property
    def hint_channels(self) -> int:
        return self.config.hint_channels


@attrs.frozen
class AdapterModel:
    """A loaded T2I-Adapter (also a CONTROL_NET socket value)."""

    handle: ModelHandle
    config: AdapterConfig
    file: str
    control_type: int | None = None

    @property
    def module(self) -> T2IAdapter:
        return self.handle.module  # type: ignore[return-value]

    @property
    def hint_channels(self) -> int:
        return self.config.hint_channels


def load_adapter(state: Mapping[str, Any], shapes: Mapping[str, Any], file: str) -> AdapterModel:
    """A T2I-Adapter file (original or diffusers layout) onto :class:`T2IAdapter`."""
    keys = original_keys(shapes)
    config = adapter_config({k: shapes[v] for k, v in keys.items()}, diffusers_blocks(shapes))
    module = build_on_meta(T2IAdapter, config)
    tensors = RenamedView(state, keys)
    load_into_module(module, tensors, LoadPolicy(missing="error", unexpected="warn"), source=file)
    module.eval()
    return AdapterModel(ModelHandle(module, name=f"t2i-adapter:{file}"), config, file)


def _describe(shapes: Mapping[str, Any]) -> str:
    keys = sorted(shapes)
    if not keys:
        return "an empty file"
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "a checkpoint (load it with a checkpoint loader)"
    if any(k.startswith(("lora_unet_", "lora_te")) or ".lora_up." in k for k in keys):
        return "a LoRA (load it with LoraLoader)"
    return f"{len(keys)} tensors starting {', '.join(keys[:3])}"


def load_controlnet(path: Path, model: Any = None) -> Any:
    """Load the ControlNet (SD1.x/SDXL or Flux), T2I-Adapter or control-LoRA in ``path``. ``model`` (DiffControlNetLoader's MODEL) supplies the
    base weights of "difference" files, whose tensors are deltas on the model's UNet."""
    state = open_safetensors(path)
    shapes = {k: tuple(v.shape) for k, v in state.entries.items()}
    file = path.name
    from loom_controlnet.flux_model import is_flux_controlnet

    if is_flux_controlnet(shapes):
        from loom_controlnet.flux_loader import load_flux_controlnet

        return load_flux_controlnet(state, shapes, file)
    layout = detect_layout(shapes)
    if layout is None and is_adapter(shapes):
        return load_adapter(state, shapes, file)
    if "lora_controlnet" in shapes:
        from loom_controlnet.control_lora import ControlLoraModel

        if "input_hint_block.0.weight" not in shapes:
            raise ModelFileError(f"{file} is a control-LoRA without its hint encoder")
        return ControlLoraModel(state, file, shapes["input_hint_block.0.weight"][1])
    if layout is None:
        raise ModelFileError(
            f"{file} is not a ControlNet: it holds {_describe(shapes)}",
            hint="put ControlNet files (original control_model.* or diffusers "
            "ControlNetModel layout) and T2I-Adapters in models/controlnet",
        )
    config = original_config(shapes, layout.prefix) if layout.kind == "original" else None
    if config is None:
        config = diffusers_config(shapes)
    union = union_types(shapes, layout.prefix)
    if union is not None:
        config = attrs.evolve(config, union_types=union[0], union_width=union[1])
    module = build_on_meta(ControlNet, config)
    module_keys = list(module.state_dict().keys())
    names = diffusers_names(config, len(module.zero_convs)) if layout.kind == "diffusers" else {}
    keys = file_keys(layout, module_keys, names)
    tensors: Mapping[str, Any] = RenamedView(state, keys)
    if "difference" in shapes and layout.kind == "original":
        tensors = _add_base_weights(tensors, model, layout, file)
    load_into_module(module, tensors, LoadPolicy(missing="error", unexpected="ignore"), source=file)
    module.eval()
    _log_unused(state.keys(), keys.values(), layout, file)
    stem = path.stem
    return ControlNetModel(
        ModelHandle(module, name=f"controlnet:{file}"),
        config,
        file,
        global_average_pooling=stem.endswith(SHUFFLE_SUFFIXES),
    )


def _add_base_weights(
    tensors: Mapping[str, Any], model: Any, layout: Layout, file: str
) -> dict[str, Any]:
    """A "difference" ControlNet's tensors plus the model's UNet weights of the same name."""
    if model is None:
        raise ModelFileError(
            f"{file} holds differences to a base model: load it with DiffControlNetLoader "
            "and connect the model it was made for"
        )
    base = model.module.state_dict()
    out = {}
    for key, tensor in tensors.items():
        if key in base:
            tensor = tensor + base[key].to(tensor.dtype)
        out[key] = tensor
    return out


def _log_unused(all_keys: Any, used: Any, layout: Layout, file: str) -> None:
    unused = sorted(set(all_keys) - set(used) - {"difference"})
    if unused:
        log.warning(
            "%s: %d keys of the %s ControlNet layout were not used: %s",
            file,
            len(unused),
            layout.kind,
            ", ".join(unused[:8]),
        )
