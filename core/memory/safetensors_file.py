"""Reading safetensors files memory-mapped, zero-copy, with clear errors.

The header is parsed and checked by :func:`loom.safetensors_header.read_header` (so a truncated or
corrupt file, a pickle, or a dtype torch cannot hold is reported by name before any tensor
is touched). Tensors are views into a
copy-on-write memory map of the file: opening costs nothing, the page cache backs the
weights, and no second copy is made in RAM. Nothing is ever unpickled.
"""

from __future__ import annotations

import logging
import mmap
import os
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs
import torch

from loom.errors import ModelFileError
from loom.safetensors_header import read_header
from loom.types import CheckpointHeader

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 100 * 2**20

#: base address -> (length, the map): every live map tensors may point into
_MAPS: dict[int, tuple[int, weakref.ref[mmap.mmap]]] = {}


def release_file_pages(tensor: torch.Tensor) -> bool:
    """Drop the pages under ``tensor`` from this process's resident set, if it is a view
    into a memory-mapped safetensors file; return whether it was.

    For a weight that was replaced by a converted or moved copy: its original stays valid
    (a later read faults the pages back in from the page cache or the file), but no longer
    counts twice in RAM. Only whole pages inside the tensor are released; the maps are
    copy-on-write and never written, so the pages still hold the file's bytes.
    """
    if (
        tensor.device.type != "cpu"
        or not tensor.is_contiguous()
        or not hasattr(mmap, "MADV_DONTNEED")
    ):
        return False
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    for base, (length, ref) in list(_MAPS.items()):
        mapped = ref()
        if mapped is None or mapped.closed:
            del _MAPS[base]
            continue
        if base <= start and end <= base + length:
            first = -(-(start - base) // mmap.PAGESIZE) * mmap.PAGESIZE
            last = (end - base) // mmap.PAGESIZE * mmap.PAGESIZE
            if last > first:
                mapped.madvise(mmap.MADV_DONTNEED, first, last - first)
            return True
    return False


def safetensors_dtypes() -> dict[str, torch.dtype]:
    """safetensors dtype names this torch build can hold, mapped to torch dtypes."""
    names = {
        "F64": "float64",
        "F32": "float32",
        "F16": "float16",
        "BF16": "bfloat16",
        "I64": "int64",
        "I32": "int32",
        "I16": "int16",
        "I8": "int8",
        "U8": "uint8",
        "U16": "uint16",
        "U32": "uint32",
        "U64": "uint64",
        "BOOL": "bool",
        "F8_E4M3": "float8_e4m3fn",
        "F8_E5M2": "float8_e5m2",
        "F8_E8M0": "float8_e8m0fnu",  # MXFP8 block scales
    }
    return {st: getattr(torch, name) for st, name in names.items() if hasattr(torch, name)}


@attrs.frozen
class TensorEntry:
    """Where one tensor lies in the file (absolute byte offsets) and what it holds."""

    dtype: torch.dtype
    dtype_name: str
    shape: tuple[int, ...]
    start: int
    end: int


def _entries(header: CheckpointHeader, dtypes: Mapping[str, torch.dtype]) -> dict[str, TensorEntry]:
    """Absolute byte ranges and torch dtypes of a checked header's tensors."""
    entries = {}
    for key, info in header.tensors.items():
        if info.dtype not in dtypes:
            raise ModelFileError(
                f"{header.path.name}: tensor {key!r} has dtype {info.dtype!r}, which Loom cannot load",
                hint=f"supported dtypes: {', '.join(sorted(dtypes))}",
            )
        begin, end = info.data_offsets or (0, 0)
        entries[key] = TensorEntry(
            dtypes[info.dtype],
            info.dtype,
            info.shape,
            header.data_start + begin,
            header.data_start + end,
        )
    return entries


class SafetensorsFile(Mapping[str, torch.Tensor]):
    """A safetensors file opened memory-mapped; ``file[key]`` is a zero-copy CPU tensor.

    :param path: the ``.safetensors`` file.
    :param prefetch: ask the OS to read the file ahead (``MADV_WILLNEED``) without waiting.
    """

    def __init__(self, path: str | os.PathLike[str], *, prefetch: bool = True) -> None:
        self.path = Path(path)
        self._header = read_header(self.path)  # checks the whole header; raises ModelFileError
        self.entries = _entries(self._header, safetensors_dtypes())
        self.metadata = dict(self._header.metadata)
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size else None
        except OSError as exc:
            raise ModelFileError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        self._bytes = torch.frombuffer(self._map, dtype=torch.uint8) if self._map else None
        if self._map is not None and self._bytes is not None:
            _MAPS[self._bytes.data_ptr()] = (len(self._map), weakref.ref(self._map))
        if prefetch and self._map is not None and hasattr(mmap, "MADV_WILLNEED"):
            self._map.madvise(mmap.MADV_WILLNEED)

    def __repr__(self) -> str:
        return f"<SafetensorsFile {self.path.name} tensors={len(self.entries)}>"

    def __getitem__(self, key: str) -> torch.Tensor:
        entry = self.entries[key]
        assert self._bytes is not None
        raw = self._bytes[entry.start : entry.end]
        try:
            flat = raw.view(entry.dtype)
        except RuntimeError:  # storage offset not aligned to the dtype: copy this one
            flat = raw.clone().view(entry.dtype)
        return flat.view(entry.shape)

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def size_bytes(self) -> int:
        """Bytes of tensor data in the file."""
        return sum(e.end - e.start for e in self.entries.values())

    def header(self) -> CheckpointHeader:
        """The header as :class:`loom.types.CheckpointHeader` (no tensor is read)."""
        return self._header
