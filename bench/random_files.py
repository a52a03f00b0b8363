"""Random-weight safetensors files written one tensor at a time, so writing a full-size
model never holds it in memory (the benches' stand-ins for real checkpoints)."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

SAFETENSORS_DTYPES = {
    torch.uint8: "U8",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.float32: "F32",
}


def stream_safetensors(
    path: Path,
    shapes: Mapping[str, tuple[int, ...]],
    dtype: torch.dtype,
    tensor_for: Callable[[str, tuple[int, ...]], torch.Tensor],
    dtypes: Mapping[str, torch.dtype] | None = None,
) -> int:
    """Write ``tensor_for(key, shape)`` (on any device) cast to ``dtype`` (or to
    ``dtypes[key]`` where given) for every key of ``shapes``, in order, to ``path``; returns
    the file's size in bytes."""
    dtypes = dict(dtypes or {})
    for key in shapes:
        dtypes.setdefault(key, dtype)
    header, offset = {}, 0
    for key, shape in shapes.items():
        size = torch.Size(shape).numel() * dtypes[key].itemsize
        header[key] = {
            "dtype": SAFETENSORS_DTYPES[dtypes[key]],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        out.write(struct.pack("<Q", len(raw)) + raw)
        for key, shape in shapes.items():
            tensor = tensor_for(key, shape).to(dtypes[key]).contiguous()
            out.write(tensor.reshape(-1).view(torch.uint8).cpu().numpy().data)
    return path.stat().st_size
