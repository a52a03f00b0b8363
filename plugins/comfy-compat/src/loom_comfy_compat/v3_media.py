"""``comfy_api.latest.Input`` / ``InputImpl`` / ``Types``: the value types V3 nodes pass
around (images, masks, audio, latents, video, meshes, voxels).

Images and masks are tensors and audio/latents dicts, as in ComfyUI, so those work as they
do there. Video is held as :class:`VideoComponents` (frames, frame rate, audio); what needs a
video codec (writing or reading a file, which ComfyUI does with PyAV) fails when called,
with a :class:`~loom.errors.LoomError` naming the running node, never at import.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import io
from fractions import Fraction
from typing import IO, Any, TypedDict

from loom.errors import LoomError
from loom.frontend import current_context


def media_unsupported(what: str) -> LoomError:
    """The error for media work Loom cannot do, naming the node running now (if any)."""
    ctx = current_context()
    where = "this code"
    if ctx is not None:
        class_type = (ctx.prompt.get(ctx.node_id) or {}).get("class_type", "?")
        where = f"node {ctx.node_id} ({class_type})"
    return LoomError(
        f"{where}: {what} needs an audio/video codec, and Loom has none "
        "(ComfyUI uses PyAV for this)",
        hint="nodes that encode or decode audio or video files do not run on Loom yet",
    )


class AudioInput(TypedDict):
    """Audio: ``waveform`` ``[B, C, T]`` and ``sample_rate``."""

    waveform: Any
    sample_rate: int


class LatentInput(TypedDict, total=False):
    """A latent: ``samples`` ``[B, C, H, W]``, optionally ``noise_mask`` and ``batch_index``."""

    samples: Any
    noise_mask: Any
    batch_index: list[int]


class _ComboEnum(str, enum.Enum):
    """String choices a combo input offers (``as_input`` lists them)."""

    @classmethod
    def as_input(cls) -> list[str]:
        """The values, for a combo input."""
        return [member.value for member in cls]


class VideoCodec(_ComboEnum):
    """Codecs a video may be saved with."""

    AUTO = "auto"
    H264 = "h264"


class VideoContainer(_ComboEnum):
    """Containers a video may be saved in."""

    AUTO = "auto"
    MP4 = "mp4"

    @classmethod
    def get_extension(cls, value: str | VideoContainer) -> str:
        """The file extension for ``value`` (``auto`` saves MP4)."""
        return "mp4" if cls(value) in (cls.MP4, cls.AUTO) else ""


@dataclasses.dataclass
class VideoComponents:
    """A video's parts: ``images`` ``[F, H, W, C]``, ``frame_rate``, optional audio and
    metadata."""

    images: Any
    frame_rate: Fraction
    audio: AudioInput | None = None
    metadata: dict | None = None


class MESH:
    """A batch of meshes: ``vertices`` ``[B, N, 3]``, ``faces`` ``[B, M, 3]``."""

    def __init__(self, vertices: Any, faces: Any) -> None:
        self.vertices = vertices
        self.faces = faces


class VOXEL:
    """A batch of voxel grids (``data``)."""

    def __init__(self, data: Any) -> None:
        self.data = data


class VideoInput(abc.ABC):
    """A video a node receives: subclasses give its components and save it."""

    @abc.abstractmethod
    def get_components(self) -> VideoComponents:
        """The frames, frame rate and audio."""

    @abc.abstractmethod
    def save_to(
        self,
        path: str | IO[bytes],
        format: VideoContainer = VideoContainer.AUTO,
        codec: VideoCodec = VideoCodec.AUTO,
        metadata: dict | None = None,
    ) -> None:
        """Write the video to ``path`` (a file name or a binary stream)."""

    def get_stream_source(self) -> str | io.BytesIO:
        """Something a decoder can read: the video saved to memory by default."""
        buffer = io.BytesIO()
        self.save_to(buffer)
        buffer.seek(0)
        return buffer

    def get_dimensions(self) -> tuple[int, int]:
        """``(width, height)``."""
        images = self.get_components().images
        return int(images.shape[2]), int(images.shape[1])

    def get_frame_count(self) -> int:
        return int(self.get_components().images.shape[0])

    def get_frame_rate(self) -> Fraction:
        return Fraction(self.get_components().frame_rate)

    def get_duration(self) -> float:
        """Seconds: frames over frame rate."""
        components = self.get_components()
        return float(components.images.shape[0] / components.frame_rate)

    def get_container_format(self) -> str:
        raise media_unsupported("reading a video container's format")


class VideoFromComponents(VideoInput):
    """A video made from frames (and audio) in memory; saving it needs a codec."""

    def __init__(self, components: VideoComponents) -> None:
        self._components = components

    def get_components(self) -> VideoComponents:
        return self._components

    def save_to(
        self,
        path: str | IO[bytes],
        format: VideoContainer = VideoContainer.AUTO,
        codec: VideoCodec = VideoCodec.AUTO,
        metadata: dict | None = None,
    ) -> None:
        raise media_unsupported("encoding a video file")


class VideoFromFile(VideoInput):
    """A video file (a path or a binary stream). Saving it unchanged (container ``auto``,
    codec ``auto``, no metadata) copies its bytes; reading frames or rewriting it needs a
    codec."""

    def __init__(self, file: str | IO[bytes]) -> None:
        self._file = file

    def get_stream_source(self) -> str | io.BytesIO:
        if isinstance(self._file, str):
            return self._file
        self._file.seek(0)
        return io.BytesIO(self._file.read())

    def get_components(self) -> VideoComponents:
        raise media_unsupported("decoding a video file")

    def save_to(
        self,
        path: str | IO[bytes],
        format: VideoContainer = VideoContainer.AUTO,
        codec: VideoCodec = VideoCodec.AUTO,
        metadata: dict | None = None,
    ) -> None:
        if metadata or VideoContainer(format) != VideoContainer.AUTO:
            raise media_unsupported("rewriting a video file (another container or metadata)")
        if VideoCodec(codec) != VideoCodec.AUTO:
            raise media_unsupported("re-encoding a video file")
        source = self.get_stream_source()
        data = source.getvalue() if isinstance(source, io.BytesIO) else _read(source)
        if isinstance(path, str):
            with open(path, "wb") as target:
                target.write(data)
        else:
            path.write(data)


def _read(name: str) -> bytes:
    with open(name, "rb") as source:
        return source.read()


class _TensorAliases(type):
    """``Input.Image`` / ``Input.Mask`` are ``torch.Tensor``, imported only when read."""

    def __getattr__(cls, name: str) -> Any:
        if name in ("Image", "Mask"):
            import torch

            return torch.Tensor
        raise AttributeError(name)


class Input(metaclass=_TensorAliases):
    """``comfy_api.latest.Input``: the value types (``Input.Video``, ``Input.Audio``...)."""

    Audio = AudioInput
    Latent = LatentInput
    Video = VideoInput


class InputImpl:
    """``comfy_api.latest.InputImpl``: the video classes nodes construct."""

    VideoFromFile = VideoFromFile
    VideoFromComponents = VideoFromComponents


class Types:
    """``comfy_api.latest.Types``."""

    VideoCodec = VideoCodec
    VideoContainer = VideoContainer
    VideoComponents = VideoComponents
    MESH = MESH
    VOXEL = VOXEL


def tensor_alias(name: str) -> Any:
    """``ImageInput`` / ``MaskInput`` (``torch.Tensor``) for a module ``__getattr__``."""
    return getattr(Input, {"ImageInput": "Image", "MaskInput": "Mask"}[name])


__all__ = [
    "MESH",
    "VOXEL",
    "AudioInput",
    "Input",
    "InputImpl",
    "LatentInput",
    "Types",
    "VideoCodec",
    "VideoComponents",
    "VideoContainer",
    "VideoFromComponents",
    "VideoFromFile",
    "VideoInput",
    "media_unsupported",
]
