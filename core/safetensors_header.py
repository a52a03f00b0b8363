"""Reading and checking a safetensors file's header, without loading any tensor.

:func:`read_header` reads only the header of a ``.safetensors`` file (an 8-byte
little-endian length, then that many bytes of JSON) and checks it against the file size,
so a truncated or corrupt file fails here with a message naming it, before any family
builds modules. It never imports torch and never unpickles: a pickle ``.ckpt`` is refused.
Which family owns a file is :mod:`loom.family_detection`'s question.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loom.errors import ModelFileError
from loom.types import CheckpointHeader, TensorInfo

#: Bits per element of every dtype the safetensors format defines.
DTYPE_BITS: Mapping[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}

#: The safetensors reference implementation refuses headers larger than this.
MAX_HEADER_BYTES = 100_000_000

_ONLY_SAFETENSORS = "Loom only loads .safetensors files and never unpickles model files"
_CONVERT_HINT = (
    "convert it to safetensors with a tool you trust, or download the .safetensors "
    "release of the same model"
)


def read_header(path: Path | str) -> CheckpointHeader:
    """Read and check the header of the safetensors file at ``path``; no tensor is loaded.

    :raises ModelFileError: the file is missing, not a safetensors file (a pickle
        checkpoint, say), truncated, or its header is corrupt or names an unknown dtype.
    """
    path = Path(path)
    name = path.name
    try:
        with path.open("rb") as handle:
            file_size = _file_size(handle)
            prefix = handle.read(8)
            _check_prefix(name, prefix, file_size)
            (header_size,) = struct.unpack("<Q", prefix)
            _check_header_size(name, prefix, header_size, file_size)
            raw = handle.read(header_size)
    except FileNotFoundError as exc:
        raise ModelFileError(f"model file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise ModelFileError(f"{path} is a directory, not a model file") from exc
    except PermissionError as exc:
        raise ModelFileError(f"cannot read model file {path}: permission denied") from exc
    if len(raw) != header_size:
        raise ModelFileError(f"{name} is truncated: its header ends past the end of the file")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(
            f"{name} has a corrupt safetensors header (not valid JSON: {exc})"
        ) from exc
    if not isinstance(document, dict):
        raise ModelFileError(f"{name} has a corrupt safetensors header (expected a JSON object)")
    data_size = file_size - 8 - header_size
    metadata = _metadata(name, document.pop("__metadata__", None))
    tensors = {key: _tensor_info(name, key, entry, data_size) for key, entry in document.items()}
    return CheckpointHeader(
        path=path, tensors=tensors, metadata=metadata, data_start=8 + header_size
    )


def _file_size(handle: Any) -> int:
    handle.seek(0, 2)
    size = handle.tell()
    handle.seek(0)
    return size


def _looks_like_pickle(prefix: bytes) -> str | None:
    """What kind of PyTorch pickle file ``prefix`` starts, or None."""
    if prefix.startswith(b"PK\x03\x04"):
        return "a PyTorch zip/pickle checkpoint"
    if prefix[:1] == b"\x80" and prefix[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle"
    return None


def _check_prefix(name: str, prefix: bytes, file_size: int) -> None:
    kind = _looks_like_pickle(prefix)
    if kind is not None:
        raise ModelFileError(
            f"{name} is not a safetensors file (it looks like {kind}); {_ONLY_SAFETENSORS}",
            hint=_CONVERT_HINT,
        )
    if len(prefix) < 8:
        raise ModelFileError(
            f"{name} is not a safetensors file: it is only {file_size} bytes long "
            "(empty or truncated)"
        )


def _check_header_size(name: str, prefix: bytes, header_size: int, file_size: int) -> None:
    if header_size > MAX_HEADER_BYTES and header_size > file_size:
        raise ModelFileError(
            f"{name} is not a safetensors file (its first 8 bytes are not a plausible header "
            f"length); {_ONLY_SAFETENSORS}",
            hint=_CONVERT_HINT,
        )
    if header_size > file_size - 8:
        raise ModelFileError(
            f"{name} is truncated: its header says {header_size} bytes but the file holds "
            f"only {file_size - 8} after the length field",
            hint="download or copy the file again",
        )
    if header_size > MAX_HEADER_BYTES:
        raise ModelFileError(
            f"{name} has a {header_size}-byte safetensors header, larger than the "
            f"{MAX_HEADER_BYTES}-byte limit; the file is probably corrupt"
        )


def _metadata(name: str, raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ModelFileError(
            f"{name} has a corrupt safetensors header (__metadata__ is not an object)"
        )
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}


def _tensor_info(name: str, key: str, entry: Any, data_size: int) -> TensorInfo:
    where = f"{name}: tensor {key!r}"
    if not isinstance(entry, dict):
        raise ModelFileError(f"{where} has a corrupt header entry (expected an object)")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        known = ", ".join(DTYPE_BITS)
        raise ModelFileError(f"{where} has unknown dtype {dtype!r} (safetensors dtypes: {known})")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise ModelFileError(f"{where} has a corrupt shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_count(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise ModelFileError(f"{where} has corrupt data offsets {offsets!r}")
    begin, end = offsets
    if end > data_size:
        raise ModelFileError(
            f"{name} is truncated: tensor {key!r} ends at byte {end} of the data section "
            f"but the file holds only {data_size} bytes of data",
            hint="download or copy the file again",
        )
    bits = DTYPE_BITS[dtype]
    expected = math.prod(shape) * bits
    if bits % 8 == 0 and expected // 8 != end - begin:
        raise ModelFileError(
            f"{where} has {end - begin} bytes of data but {dtype}{shape} needs {expected // 8} "
            "bytes; the header is corrupt"
        )
    return TensorInfo(dtype=dtype, shape=tuple(shape), data_offsets=(begin, end))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
