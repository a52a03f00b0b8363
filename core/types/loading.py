"""Loading: what the generic loader nodes ask model families, and the file header they read."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs

if TYPE_CHECKING:
    from loom.folders import ModelFolders
    from loom.memory import MemoryManager


@attrs.frozen
class TensorInfo:
    """One tensor's entry in a safetensors header."""

    dtype: str
    shape: tuple[int, ...]
    #: ``(begin, end)`` byte offsets inside the data section (after the header).
    data_offsets: tuple[int, int] | None = attrs.field(default=None, eq=False)


@attrs.frozen
class CheckpointHeader:
    """A safetensors file's header: read once, without loading any tensor."""

    path: Path
    tensors: Mapping[str, TensorInfo]
    metadata: Mapping[str, str]
    #: File offset where the data section (and so ``data_offsets``) starts.
    data_start: int = 0

    def keys_with_prefix(self, prefix: str) -> list[str]:
        return [key for key in self.tensors if key.startswith(prefix)]

    def has(self, *keys: str) -> bool:
        return all(key in self.tensors for key in keys)


class ModelPart(str, enum.Enum):
    """Which part of a file a loader node asks a family for (a ``str``: compares to its value)."""

    CHECKPOINT = "checkpoint"
    DIFFUSION_MODEL = "diffusion_model"
    TEXT_ENCODER = "text_encoder"
    VAE = "vae"

    @property
    def label(self) -> str:
        """How the part reads in messages (``"text encoder"``)."""
        return "VAE" if self is ModelPart.VAE else self.value.replace("_", " ")


@attrs.frozen(kw_only=True)
class LoadRequest:
    """Everything a loader hands :meth:`ModelFamily.load` besides the file's header.

    A family reads the fields it understands and must work with every default (tests and
    scripts load files without a runtime).
    """

    #: More files to combine into the same part (``DualCLIPLoader``'s second file); the
    #: family scored each above 0 for the part.
    extra_headers: tuple[CheckpointHeader, ...] = ()
    #: ``UNETLoader``'s ``weight_dtype`` (``"default"``, ``"fp8_e4m3fn"``, ...); None: as stored.
    weight_dtype: str | None = None
    #: ``CLIPLoader`` / ``DualCLIPLoader``'s ``type`` (``"stable_diffusion"``, ``"sdxl"``...).
    clip_type: str | None = None
    #: The text encoder loaders' ``device`` (``"default"`` or ``"cpu"``).
    device: str = "default"
    #: Model folders (tokenizers, embeddings); None outside a runtime.
    folders: ModelFolders | None = None
    #: The memory manager the loaded handles are placed through; None runs them in place.
    memory: MemoryManager | None = None
    #: A tokenizer folder to use instead of searching the model folders.
    tokenizer_dir: Path | None = None
    #: Textual-inversion directories; None means the ``embeddings`` model folders.
    embedding_dirs: tuple[Path, ...] | None = None


@attrs.frozen
class LoadedParts:
    """What loading a file produced; parts the file does not hold are None."""

    model: Any = None
    clip: Any = None
    vae: Any = None


class ModelFamily(Protocol):
    """A model family plugin's answers for the generic loader nodes.

    ``detect`` scores how sure the family is that the file is its own (0 = not mine);
    the highest score wins. ``load`` builds modules on the meta device and assigns tensors
    through :mod:`loom.memory`; a family raises :class:`~loom.errors.ModelFileError` for a
    part it cannot load.
    """

    name: str

    def detect(self, header: CheckpointHeader, part: ModelPart) -> float:
        """Score (0 = not mine) for ``header`` holding ``part``."""
        ...

    def load(self, header: CheckpointHeader, part: ModelPart, request: LoadRequest) -> LoadedParts:
        """Load ``part`` of the file (and of ``request.extra_headers``) as ``request`` asks."""
        ...
