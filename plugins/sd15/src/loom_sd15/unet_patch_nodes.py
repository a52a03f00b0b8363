"""The UNet patch nodes of ComfyUI's ``comfy_extras`` and where ComfyUI 0.8 defines them
(/object_info's ``python_module``). Importing this imports no torch."""

from __future__ import annotations

from loom_sd15.deep_shrink import PatchModelAddDownscale
from loom_sd15.hypertile import HyperTile
from loom_sd15.sag import SelfAttentionGuidance
from loom_sd15.tome import TomePatchModel

UNET_PATCH_NODES = {
    SelfAttentionGuidance: "comfy_extras.nodes_sag",
    HyperTile: "comfy_extras.nodes_hypertile",
    TomePatchModel: "comfy_extras.nodes_tomesd",
    PatchModelAddDownscale: "comfy_extras.nodes_model_downscale",
}
