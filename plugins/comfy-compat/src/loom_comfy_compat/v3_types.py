"""The rest of ``comfy_api.latest.io``'s socket types: plain value types (``io.Image``,
``io.Mesh``...), the ``io.Webcam`` and ``io.ImageCompare`` widgets, and the inputs whose
type is open: ``io.MultiType`` (one socket accepting several types) and ``io.MatchType``
(inputs and outputs sharing one type the frontend settles on when linking).

Written from ComfyUI 0.7.0's ``comfy_api/latest/_io.py`` (the release nearest 0.8 whose
source is stored) behaviour; the ``INPUT_TYPES`` entries are what Loom's core checks
(``"IMAGE,MASK"`` unions, ``COMFY_MATCHTYPE_V3`` accepting any link).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from loom_comfy_compat.v3_io import (
    ComfyTypeI,
    ComfyTypeIO,
    Input,
    Output,
    WidgetInput,
    comfytype,
)
from loom_comfy_compat.v3_media import MESH, VOXEL, AudioInput, LatentInput, VideoInput

#: Socket types that are plain values passed between nodes (no widget): name -> io_type.
PLAIN_TYPES = {
    "Image": "IMAGE",
    "Mask": "MASK",
    "Latent": "LATENT",
    "Conditioning": "CONDITIONING",
    "Model": "MODEL",
    "ModelPatch": "MODEL_PATCH",
    "Clip": "CLIP",
    "Vae": "VAE",
    "Sampler": "SAMPLER",
    "Sigmas": "SIGMAS",
    "Noise": "NOISE",
    "Guider": "GUIDER",
    "ControlNet": "CONTROL_NET",
    "ClipVision": "CLIP_VISION",
    "ClipVisionOutput": "CLIP_VISION_OUTPUT",
    "AudioEncoder": "AUDIO_ENCODER",
    "AudioEncoderOutput": "AUDIO_ENCODER_OUTPUT",
    "StyleModel": "STYLE_MODEL",
    "Gligen": "GLIGEN",
    "UpscaleModel": "UPSCALE_MODEL",
    "LatentUpscaleModel": "LATENT_UPSCALE_MODEL",
    "LoraModel": "LORA_MODEL",
    "LossMap": "LOSS_MAP",
    "Audio": "AUDIO",
    "Video": "VIDEO",
    "SVG": "SVG",
    "Voxel": "VOXEL",
    "Mesh": "MESH",
    "Photomaker": "PHOTOMAKER",
    "Hooks": "HOOKS",
    "HookKeyframes": "HOOK_KEYFRAMES",
    "TimestepsRange": "TIMESTEPS_RANGE",
    "LatentOperation": "LATENT_OPERATION",
    "FlowControl": "FLOW_CONTROL",
    "Accumulation": "ACCUMULATION",
    "Load3DCamera": "LOAD3D_CAMERA",
    "Load3D": "LOAD_3D",
    "Load3DAnimation": "LOAD_3D_ANIMATION",
    "Point": "POINT",
    "FaceAnalysis": "FACE_ANALYSIS",
    "BBOX": "BBOX",
    "SEGS": "SEGS",
    "Tracks": "TRACKS",
    "WanCameraEmbedding": "WAN_CAMERA_EMBEDDING",
    "AnyType": "*",
}
#: The value classes of the socket types whose values are ``comfy_api.latest`` types.
VALUE_TYPES = {
    "Audio": AudioInput,
    "Latent": LatentInput,
    "Video": VideoInput,
    "Mesh": MESH,
    "Voxel": VOXEL,
}
for _name, _io_type in PLAIN_TYPES.items():
    _attrs = {"Type": VALUE_TYPES[_name]} if _name in VALUE_TYPES else {}
    globals()[_name] = comfytype(_io_type)(type(_name, (ComfyTypeIO,), _attrs))
Image: type[ComfyTypeIO]
Latent: type[ComfyTypeIO]
Mask: type[ComfyTypeIO]
AnyType: type[ComfyTypeIO]


@comfytype("WEBCAM")
class Webcam(ComfyTypeIO):
    """The webcam capture widget (its value is the captured file's name)."""

    Type = str

    class Input(WidgetInput):
        def __init__(
            self, id: str, display_name: str | None = None, optional: bool = False,
            tooltip: str | None = None, lazy: bool | None = None, default: str | None = None,
            socketless: bool | None = None, extra_dict: dict[str, Any] | None = None,
            raw_link: bool | None = None,
        ) -> None:  # fmt: skip
            super().__init__(
                id, display_name, optional, tooltip, lazy, default, socketless,
                extra_dict=extra_dict, raw_link=raw_link,
            )  # fmt: skip


@comfytype("IMAGECOMPARE")
class ImageCompare(ComfyTypeI):
    """A before/after image comparison widget; socketless by default."""

    Type = dict

    class Input(WidgetInput):
        def __init__(
            self, id: str, display_name: str | None = None, optional: bool = False,
            tooltip: str | None = None, socketless: bool = True,
        ) -> None:  # fmt: skip
            super().__init__(id, display_name, optional, tooltip, None, None, socketless)


def _io_type_of(kind: Any) -> str:
    """The io_type of a ComfyType class or instance (``io.Image`` -> ``"IMAGE"``)."""
    return kind.io_type if isinstance(kind, type) else type(kind).io_type


@comfytype("COMFY_MULTITYPED_V3")
class MultiType(ComfyTypeI):
    """One input that accepts several socket types (``"IMAGE,MASK"``).

    ``id`` may be an input (``io.Float.Input("x", default=1.0)``): its widget and options are
    kept, its type listed first.
    """

    Type = Any

    class Input(Input):
        def __init__(
            self, id: str | Input, types: list[Any], display_name: str | None = None,
            optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
            extra_dict: dict[str, Any] | None = None, raw_link: bool | None = None,
        ) -> None:  # fmt: skip
            self.input_override: Input | None = None
            if isinstance(id, Input):
                self.input_override = copy.copy(id)
                optional = True if id.optional else optional
                tooltip = id.tooltip if id.tooltip is not None else tooltip
                display_name = id.display_name if id.display_name is not None else display_name
                lazy = id.lazy if id.lazy is not None else lazy
                if isinstance(self.input_override, WidgetInput):
                    self.input_override.widget_type = self.input_override.get_io_type()
                id = id.id
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link)
            self.types = list(types)

        def get_io_type(self) -> str:
            names = [_io_type_of(kind) for kind in self.types]
            if self.input_override is not None:
                names.insert(0, self.input_override.get_io_type())
            return ",".join(dict.fromkeys(names))  # unique, order kept

        def options(self) -> dict[str, Any]:
            own = super().options()
            if self.input_override is None:
                return own
            return self.input_override.options() | own


@comfytype("COMFY_MATCHTYPE_V3")
class MatchType(ComfyTypeIO):
    """Inputs and outputs sharing one ``Template``: the frontend makes them one type when
    the first is linked; the server accepts any link, as ComfyUI's does."""

    class Template:
        def __init__(self, template_id: str, allowed_types: Any = None) -> None:
            if allowed_types is None:
                allowed_types = [PLAIN_TYPES_BY_NAME["AnyType"]]
            elif not isinstance(allowed_types, Iterable) or isinstance(allowed_types, type):
                allowed_types = [allowed_types]
            for kind in allowed_types:
                if not hasattr(kind, "io_type"):
                    raise ValueError(f"MatchType allowed types must be ComfyTypes, got {kind!r}")
            self.template_id = template_id
            self.allowed_types = list(allowed_types)

        def as_dict(self) -> dict[str, Any]:
            return {
                "template_id": self.template_id,
                "allowed_types": ",".join(_io_type_of(kind) for kind in self.allowed_types),
            }

    class Input(Input):
        def __init__(
            self, id: str, template: MatchType.Template, display_name: str | None = None,
            optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
            extra_dict: dict[str, Any] | None = None, raw_link: bool | None = None,
        ) -> None:  # fmt: skip
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link)
            self.template = template

        def options(self) -> dict[str, Any]:
            return super().options() | {"template": self.template.as_dict()}

    class Output(Output):
        def __init__(
            self, template: MatchType.Template, id: str | None = None,
            display_name: str | None = "MATCHTYPE", tooltip: str | None = None,
            is_output_list: bool = False,
        ) -> None:  # fmt: skip
            super().__init__(id, display_name, tooltip, is_output_list)
            self.template = template


PLAIN_TYPES_BY_NAME: dict[str, type[ComfyTypeIO]] = {name: globals()[name] for name in PLAIN_TYPES}

__all__ = ["ImageCompare", "MatchType", "MultiType", "Webcam", *PLAIN_TYPES]
