"""Classic-style stub nodes whose INPUT_TYPES mirror ComfyUI's real ones (no execution)."""

from __future__ import annotations

from loom.registry import Registry

MAX_RESOLUTION = 16384
SAMPLERS = ["euler", "euler_ancestral", "heun", "dpmpp_2m"]
SCHEDULERS = ["simple", "normal", "karras", "exponential"]
CHECKPOINTS = ["v1-5-pruned-emaonly-fp16.safetensors", "sd_xl_base_1.0.safetensors"]
INPUT_FILES = ["example.png", "other.png"]
HIDDEN_PNG = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


class _Stub:
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, **kwargs):
        return ()


class EmptyImage(_Stub):
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "width": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
                "height": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
                "color": (
                    "INT",
                    {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"},
                ),
            }
        }


class ImageInvert(_Stub):
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}


class PreviewImage(_Stub):
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}, "hidden": dict(HIDDEN_PNG)}


class SaveImage(_Stub):
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI"}),
            },
            "hidden": dict(HIDDEN_PNG),
        }


class KSampler(_Stub):
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 0xFFFFFFFFFFFFFFFF,
                        "control_after_generate": True,
                    },
                ),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
                "cfg": (
                    "FLOAT",
                    {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01},
                ),
                "sampler_name": (list(SAMPLERS),),
                "scheduler": (list(SCHEDULERS),),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "latent_image": ("LATENT",),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            }
        }


class CheckpointLoaderSimple(_Stub):
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (list(CHECKPOINTS),)}}


class CLIPTextEncode(_Stub):
    RETURN_TYPES = ("CONDITIONING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text": ("STRING", {"multiline": True, "dynamicPrompts": True}),
                "clip": ("CLIP",),
            }
        }


class EmptyLatentImage(_Stub):
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "width": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8}),
                "height": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
            }
        }


class VAEDecode(_Stub):
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "vae": ("VAE",)}}


class LoadImage(_Stub):
    RETURN_TYPES = ("IMAGE", "MASK")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (sorted(INPUT_FILES), {"image_upload": True})}}


class PrimitiveInt(_Stub):
    """The real backend node (comfy_extras), not the frontend's virtual PrimitiveNode."""

    RETURN_TYPES = ("INT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "value": (
                    "INT",
                    {"min": -(2**63), "max": 2**63 - 1, "control_after_generate": True},
                )
            }
        }


class MaskedImage(_Stub):
    """Test-only: a MASK socket before the IMAGE one, to exercise bypass type matching."""

    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",), "image": ("IMAGE",)}}


class TwoImages(_Stub):
    """Test-only: two IMAGE inputs and two IMAGE outputs (bypass keeps the slot index)."""

    RETURN_TYPES = ("IMAGE", "IMAGE")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image_a": ("IMAGE",), "image_b": ("IMAGE",)}}


class WidgetZoo(_Stub):
    """Test-only: seed naming rules, combo control, forceInput, COMBO v3 form, optional."""

    RETURN_TYPES = ("INT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "noise_seed": ("INT", {"default": 5}),
                "seed": ("INT", {"default": 6, "control_after_generate": False}),
                "mode": (["a", "b", "c"], {"control_after_generate": True}),
                "forced": ("FLOAT", {"forceInput": True}),
                "flavour": ("COMBO", {"options": ["x", "y"]}),
                "flag": ("BOOLEAN",),
            },
            "optional": {"extra": ("STRING", {"default": "opt"})},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }


DISPLAY_NAMES = {
    "ImageInvert": "Invert Image",
    "PreviewImage": "Preview Image",
    "SaveImage": "Save Image",
    "KSampler": "KSampler",
    "CheckpointLoaderSimple": "Load Checkpoint",
    "CLIPTextEncode": "CLIP Text Encode (Prompt)",
    "EmptyLatentImage": "Empty Latent Image",
    "VAEDecode": "VAE Decode",
    "LoadImage": "Load Image",
}

NODE_CLASSES = [
    EmptyImage,
    ImageInvert,
    PreviewImage,
    SaveImage,
    KSampler,
    CheckpointLoaderSimple,
    CLIPTextEncode,
    EmptyLatentImage,
    VAEDecode,
    LoadImage,
    PrimitiveInt,
    MaskedImage,
    TwoImages,
    WidgetZoo,
]


def build_registry() -> Registry:
    """A registry holding every stub, with ComfyUI's display names (EmptyImage has none)."""
    registry = Registry()
    for cls in NODE_CLASSES:
        name = cls.__name__
        registry.add_node("test", cls, class_type=name, display_name=DISPLAY_NAMES.get(name))
    return registry
