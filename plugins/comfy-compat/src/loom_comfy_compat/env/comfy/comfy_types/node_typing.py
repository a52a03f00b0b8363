"""``comfy.comfy_types.node_typing``: the ``IO`` socket-type names (loom-comfy-compat)."""

import enum

from loom_comfy_compat.missing import module_getattr


class IO(str, enum.Enum):
    """Socket type names; ``IO.ANY`` ("*") matches every type, as in ComfyUI."""

    STRING = "STRING"
    IMAGE = "IMAGE"
    MASK = "MASK"
    LATENT = "LATENT"
    BOOLEAN = "BOOLEAN"
    INT = "INT"
    FLOAT = "FLOAT"
    COMBO = "COMBO"
    CONDITIONING = "CONDITIONING"
    SAMPLER = "SAMPLER"
    SIGMAS = "SIGMAS"
    GUIDER = "GUIDER"
    NOISE = "NOISE"
    CLIP = "CLIP"
    CONTROL_NET = "CONTROL_NET"
    VAE = "VAE"
    MODEL = "MODEL"
    CLIP_VISION = "CLIP_VISION"
    CLIP_VISION_OUTPUT = "CLIP_VISION_OUTPUT"
    STYLE_MODEL = "STYLE_MODEL"
    GLIGEN = "GLIGEN"
    UPSCALE_MODEL = "UPSCALE_MODEL"
    AUDIO = "AUDIO"
    WEBCAM = "WEBCAM"
    POINT = "POINT"
    FACE_ANALYSIS = "FACE_ANALYSIS"
    BBOX = "BBOX"
    SEGS = "SEGS"
    VIDEO = "VIDEO"
    ANY = "*"
    NUMBER = "FLOAT,INT"
    PRIMITIVE = "STRING,FLOAT,INT,BOOLEAN"

    def __ne__(self, value: object) -> bool:
        if self.value == "*" or value == "*":
            return False
        if not isinstance(value, str):
            return True
        return not set(value.split(",")) <= set(self.value.split(","))

    __hash__ = str.__hash__


class ComfyNodeABC:
    """Base class some packs use for type hints on classic nodes."""


InputTypeDict = dict

__getattr__ = module_getattr(__name__)
__all__ = ["IO", "ComfyNodeABC", "InputTypeDict"]
