"""Socket types: the annotations declarative nodes use (the string is the wire type).

Annotations are ``Annotated[Any, Socket(...)]`` so that declaring nodes never imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import attrs


@attrs.frozen
class Socket:
    """Annotation marker naming a node socket's wire type (``"IMAGE"``, ``"MODEL"``)."""

    type: str


Image = Annotated[Any, Socket("IMAGE")]
Mask = Annotated[Any, Socket("MASK")]
Latent = Annotated[dict, Socket("LATENT")]
Conditioning = Annotated[list, Socket("CONDITIONING")]
Model = Annotated[Any, Socket("MODEL")]
Clip = Annotated[Any, Socket("CLIP")]
Vae = Annotated[Any, Socket("VAE")]
ClipVision = Annotated[Any, Socket("CLIP_VISION")]
Sigmas = Annotated[Any, Socket("SIGMAS")]
Noise = Annotated[Any, Socket("NOISE")]
SamplerRef = Annotated[Any, Socket("SAMPLER")]
Guider = Annotated[Any, Socket("GUIDER")]
ControlNet = Annotated[Any, Socket("CONTROL_NET")]
#: A :class:`LatentOperationFunction` (ComfyUI's LATENT_OPERATION socket).
LatentOperation = Annotated[Any, Socket("LATENT_OPERATION")]
AnyValue = Annotated[Any, Socket("*")]

#: Widget types a plain Python annotation maps to.
WIDGET_TYPES: Mapping[type, str] = {int: "INT", float: "FLOAT", str: "STRING", bool: "BOOLEAN"}
