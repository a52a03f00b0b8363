"""``nodes``: ComfyUI's core node classes under their names, backed by Loom's nodes.

``nodes.VAEEncode().encode(vae, pixels)`` runs the registered ``VAEEncode`` node with
ComfyUI's Python call signature (argument order per :data:`SIGNATURES`; other nodes take
their inputs in ``INPUT_TYPES`` order) and returns its outputs as a tuple. The classes are
resolved against the registry when called, so packs may import them while Loom is still
loading. ``SaveImage`` and ``PreviewImage`` are real classic classes a pack can subclass.
"""

from __future__ import annotations

import json
import os
import random
import string
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from loom import RunContext
from loom.errors import LoomError
from loom.frontend import current_context
from loom_comfy_compat.environment import ENV
from loom_comfy_compat.missing import PatchGuard

MAX_RESOLUTION = 16384

#: ComfyUI's method name and positional argument order for the nodes packs call most.
SIGNATURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "CheckpointLoaderSimple": ("load_checkpoint", ("ckpt_name",)),
    "VAELoader": ("load_vae", ("vae_name",)),
    "LoraLoader": (
        "load_lora",
        ("model", "clip", "lora_name", "strength_model", "strength_clip"),
    ),
    "LoraLoaderModelOnly": ("load_lora_model_only", ("model", "lora_name", "strength_model")),
    "UNETLoader": ("load_unet", ("unet_name", "weight_dtype")),
    "CLIPLoader": ("load_clip", ("clip_name", "type", "device")),
    "CLIPTextEncode": ("encode", ("clip", "text")),
    "CLIPSetLastLayer": ("set_last_layer", ("clip", "stop_at_clip_layer")),
    "VAEEncode": ("encode", ("vae", "pixels")),
    "VAEDecode": ("decode", ("vae", "samples")),
    "VAEEncodeForInpaint": ("encode", ("vae", "pixels", "mask", "grow_mask_by")),
    "EmptyLatentImage": ("generate", ("width", "height", "batch_size")),
    "EmptyImage": ("generate", ("width", "height", "batch_size", "color")),
    "ImageBatch": ("batch", ("image1", "image2")),
    "LatentUpscale": ("upscale", ("samples", "upscale_method", "width", "height", "crop")),
    "LatentUpscaleBy": ("upscale", ("samples", "upscale_method", "scale_by")),
    "SetLatentNoiseMask": ("set_mask", ("samples", "mask")),
    "ImageScale": ("upscale", ("image", "upscale_method", "width", "height", "crop")),
    "ImageScaleBy": ("upscale", ("image", "upscale_method", "scale_by")),
    "ImageInvert": ("invert", ("image",)),
    "LoadImage": ("load_image", ("image",)),
    "ConditioningCombine": ("combine", ("conditioning_1", "conditioning_2")),
    "ConditioningSetArea": (
        "append",
        ("conditioning", "width", "height", "x", "y", "strength"),
    ),
    "ConditioningZeroOut": ("zero_out", ("conditioning",)),
    "KSampler": (
        "sample",
        (
            "model",
            "seed",
            "steps",
            "cfg",
            "sampler_name",
            "scheduler",
            "positive",
            "negative",
            "latent_image",
            "denoise",
        ),
    ),
    "KSamplerAdvanced": (
        "sample",
        (
            "model",
            "add_noise",
            "noise_seed",
            "steps",
            "cfg",
            "sampler_name",
            "scheduler",
            "positive",
            "negative",
            "latent_image",
            "start_at_step",
            "end_at_step",
            "return_with_leftover_noise",
            "denoise",
        ),
    ),
}


class NodeCallError(LoomError):
    """A pack called a core node that is not registered, or with arguments it lacks."""


def _definition(class_type: str) -> Any:
    registry = ENV.registry_if_ready()
    if registry is None:
        raise NodeCallError(f"nodes.{class_type} was called before Loom finished loading nodes")
    definition = registry.get_node(class_type)
    if definition is None:
        raise NodeCallError(f"nodes.{class_type}: no installed Loom plugin provides this node")
    return definition


def _context() -> RunContext:
    ctx = current_context()
    if ctx is not None:
        return ctx
    runtime = ENV.require_runtime("nodes")
    return RunContext(
        node_id="comfy-compat",
        prompt_id="comfy-compat",
        prompt={},
        extra_data={},
        runtime=runtime,
        interrupt=runtime.executor.interrupt_flag,
    )


def run_node(class_type: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run a registered node with ComfyUI's call convention; a tuple (or ui dict) back."""
    definition = _definition(class_type)
    spec = definition.input_types(ENV.registry_if_ready())
    declared = {
        name: config
        for section in ("required", "optional")
        for name, config in (spec.get(section) or {}).items()
    }
    order = SIGNATURES.get(class_type, ("", tuple(declared)))[1]
    if len(args) > len(order):
        raise NodeCallError(f"nodes.{class_type} takes at most {len(order)} positional arguments")
    inputs = dict(zip(order, args, strict=False)) | kwargs
    for name, config in declared.items():
        options = config[1] if isinstance(config, (list, tuple)) and len(config) > 1 else {}
        if name not in inputs and isinstance(options, dict) and "default" in options:
            inputs[name] = options["default"]
    unknown = sorted(set(inputs) - set(declared))
    if unknown:
        raise NodeCallError(f"nodes.{class_type} has no inputs {unknown}")
    ctx = _context()
    obj = definition.impl.create()
    result = definition.impl.execute(obj, inputs, ctx)
    if result.ui is not None:
        return {"ui": dict(result.ui), "result": tuple(result.values)}
    return tuple(result.values)


class _CoreNodeMeta(PatchGuard):
    """Class attributes ComfyUI's classes have, read from the registered node."""

    def __getattr__(cls, name: str) -> Any:
        class_type = cls.__dict__.get("_class_type") or next(
            (c.__dict__["_class_type"] for c in cls.__mro__ if "_class_type" in c.__dict__), None
        )
        if class_type is None or name.startswith("__"):
            raise AttributeError(name)
        definition = _definition(class_type)
        values = {
            "RETURN_TYPES": tuple(o.type for o in definition.outputs),
            "RETURN_NAMES": tuple(o.name for o in definition.outputs),
            "OUTPUT_IS_LIST": tuple(o.is_list for o in definition.outputs),
            "CATEGORY": definition.category,
            "OUTPUT_NODE": definition.output_node,
            "DESCRIPTION": definition.description,
        }
        if name in values:
            return values[name]
        raise AttributeError(f"nodes.{class_type} has no attribute {name!r}")


def core_node_class(class_type: str) -> type:
    """The ComfyUI-style class for a registered (or well-known) node."""
    found = _classes.get(class_type)
    if found is not None:
        return found
    function = SIGNATURES.get(class_type, ("execute", ()))[0]

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return run_node(class_type, args, kwargs)

    def input_types(cls: type) -> dict[str, Any]:
        return _definition(class_type).input_types(ENV.registry_if_ready())

    cls = _CoreNodeMeta(
        class_type,
        (),
        {
            "_class_type": class_type,
            "_loom_guarded": True,
            "FUNCTION": function,
            function: call,
            "INPUT_TYPES": classmethod(input_types),
            "__doc__": f"ComfyUI's {class_type}, run by Loom's node of that id.",
        },
    )
    _classes[class_type] = cls
    return cls


_classes: dict[str, type] = {}


def common_ksampler(
    model: Any,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Any,
    negative: Any,
    latent: Any,
    denoise: float = 1.0,
    disable_noise: bool = False,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = False,
) -> tuple[Any]:
    """ComfyUI's helper behind KSampler: ``(latent,)``, through Loom's sampler nodes."""
    common = {
        "model": model,
        "steps": steps,
        "cfg": cfg,
        "sampler_name": sampler_name,
        "scheduler": scheduler,
        "positive": positive,
        "negative": negative,
        "latent_image": latent,
    }
    if not disable_noise and start_step is None and last_step is None and not force_full_denoise:
        return run_node("KSampler", (), {**common, "seed": seed, "denoise": denoise})
    advanced = {
        **common,
        "noise_seed": seed,
        "add_noise": "disable" if disable_noise else "enable",
        "start_at_step": start_step or 0,
        "end_at_step": last_step if last_step is not None else 10000,
        "return_with_leftover_noise": "disable" if force_full_denoise else "enable",
    }
    return run_node("KSamplerAdvanced", (), advanced)


class SaveImage:
    """ComfyUI's SaveImage as a classic class packs subclass (``output_dir``, ``type``,
    ``prefix_append``, ``compress_level``; ``save_images`` returns ``{"ui": ...}``)."""

    RETURN_TYPES: tuple[str, ...] = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."

    def __init__(self) -> None:
        settings = ENV.require_runtime("nodes.SaveImage").settings
        self.output_dir = str(settings.output_dir)
        self.type = "output"
        self.prefix_append = ""
        self.compress_level = 4

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI"}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save_images(
        self,
        images: Any,
        filename_prefix: str = "ComfyUI",
        prompt: Any = None,
        extra_pnginfo: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        import numpy as np
        from PIL import Image
        from PIL.PngImagePlugin import PngInfo

        from loom.frontend import get_save_path

        target = get_save_path(
            filename_prefix + self.prefix_append,
            Path(self.output_dir),
            images[0].shape[1],
            images[0].shape[0],
        )
        settings = ENV.require_runtime("nodes.SaveImage").settings
        metadata = None
        if not settings.disable_metadata:
            metadata = PngInfo()
            if prompt is not None:
                metadata.add_text("prompt", json.dumps(prompt))
            for key, value in (extra_pnginfo or {}).items():
                metadata.add_text(key, json.dumps(value))
        results = []
        for batch_number, image in enumerate(images):
            pixels = np.clip(255.0 * image.cpu().float().numpy(), 0, 255).astype(np.uint8)
            name = target.file_name(target.counter + batch_number, "png", batch_number)
            Image.fromarray(pixels).save(
                os.path.join(target.folder, name),
                pnginfo=metadata,
                compress_level=self.compress_level,
            )
            results.append({"filename": name, "subfolder": target.subfolder, "type": self.type})
        return {"ui": {"images": results}}


class PreviewImage(SaveImage):
    """ComfyUI's PreviewImage: SaveImage into the temp directory with a random prefix."""

    def __init__(self) -> None:
        super().__init__()
        settings = ENV.require_runtime("nodes.PreviewImage").settings
        self.output_dir = str(settings.temp_dir)
        self.type = "temp"
        self.prefix_append = "_temp_" + "".join(random.choices(string.ascii_lowercase, k=5))
        self.compress_level = 1

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"images": ("IMAGE",)},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }


_OWN_CLASSES = {"SaveImage": SaveImage, "PreviewImage": PreviewImage}


def node_class(class_type: str) -> type:
    """What ``nodes.<class_type>`` / ``NODE_CLASS_MAPPINGS[class_type]`` is."""
    if class_type in _OWN_CLASSES:
        return _OWN_CLASSES[class_type]
    registry = ENV.registry_if_ready()
    definition = registry.get_node(class_type) if registry is not None else None
    source = getattr(definition, "source_class", None)
    if source is not None and (hasattr(source, "INPUT_TYPES") or hasattr(source, "define_schema")):
        return source  # classic and V3 classes are already what packs expect
    return core_node_class(class_type)


def is_known(class_type: str) -> bool:
    registry = ENV.registry_if_ready()
    if registry is not None:
        return registry.get_node(class_type) is not None or class_type in _OWN_CLASSES
    return class_type in SIGNATURES or class_type in _OWN_CLASSES


class LiveClassMappings(Mapping[str, type]):
    """``NODE_CLASS_MAPPINGS``: every registered node, as the class ComfyUI code expects."""

    def _ids(self) -> list[str]:
        registry = ENV.registry_if_ready()
        return list(registry.nodes) if registry is not None else []

    def __getitem__(self, class_type: str) -> type:
        if class_type not in self._ids():
            raise KeyError(class_type)
        return node_class(class_type)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids())

    def __len__(self) -> int:
        return len(self._ids())


class LiveDisplayNames(Mapping[str, str]):
    """``NODE_DISPLAY_NAME_MAPPINGS``: display names of registered nodes that have one."""

    def _names(self) -> dict[str, str]:
        registry = ENV.registry_if_ready()
        if registry is None:
            return {}
        return {k: d.display_name for k, d in registry.nodes.items() if d.display_name}

    def __getitem__(self, class_type: str) -> str:
        return self._names()[class_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())
