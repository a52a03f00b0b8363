"""ComfyUI's ``_quantization_metadata``: a file's quantised layers described in its header.

Newer quantised files (ComfyUI-published ones among them) carry no ``<layer>.comfy_quant``
tensors; the safetensors header metadata holds the same descriptions as one JSON string,
``{"format_version": "1.0", "layers": {"<layer>": {"format": "float8_e4m3fn", ...}}}``, the
layer names being the file's own key prefixes (``model.diffusion_model.x.y`` in a
checkpoint). ComfyUI turns each entry into the ``<layer>.comfy_quant`` tensor its loader
reads (its JSON as uint8, replacing any such tensor the file has) and then loads the file as
any ``comfy_quant`` one; :func:`with_quant_metadata` does the same with a lazy view, so the
scaled-fp8 loading (:class:`loom.memory.ScaledView`) needs nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from loom.errors import ModelFileError
from loom.memory.scaled import QUANT_CONFIG, config_tensor

if TYPE_CHECKING:
    from loom.types import CheckpointHeader

#: The header metadata key.
QUANT_METADATA = "_quantization_metadata"


def layer_configs(metadata: Mapping[str, str], file: str) -> dict[str, dict[str, Any]]:
    """Each layer's quantisation config from ``metadata``'s ``_quantization_metadata``, by
    the layer's key prefix in the file; empty when the file has none.

    :raises ModelFileError: the entry is not ComfyUI's JSON (naming ``file``).
    """
    raw = metadata.get(QUANT_METADATA)
    if raw is None:
        return {}
    try:
        layers = json.loads(raw)["layers"]
        if not isinstance(layers, dict) or not all(isinstance(c, dict) for c in layers.values()):
            raise TypeError("'layers' is not an object of objects")
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(
            f"{file}: its {QUANT_METADATA} header entry is not ComfyUI's quantisation "
            f"description ({exc})",
            hint="the file may be damaged or written by a tool Loom does not know",
        ) from exc
    return {str(name): dict(config) for name, config in layers.items()}


class QuantMetadataView(Mapping[str, Any]):
    """``source`` with a ``<layer>.comfy_quant`` tensor for each layer ``configs`` describes
    (replacing the file's own, as ComfyUI does)."""

    def __init__(self, source: Mapping[str, Any], configs: Mapping[str, Mapping[str, Any]]):
        self.source = source
        self._added = {name + QUANT_CONFIG: config_tensor(c) for name, c in configs.items()}

    def __getitem__(self, key: str) -> Any:
        added = self._added.get(key)
        return self.source[key] if added is None else added

    def __contains__(self, key: object) -> bool:
        return key in self._added or key in self.source

    def __iter__(self) -> Iterator[str]:
        yield from (key for key in self.source if key not in self._added)
        yield from self._added

    def __len__(self) -> int:
        return sum(1 for _ in self)


def with_quant_metadata(
    source: Mapping[str, Any], metadata: Mapping[str, str], file: str
) -> Mapping[str, Any]:
    """``source`` (a file's tensors) as ComfyUI sees it once the file's
    ``_quantization_metadata`` (header ``metadata``) is applied; ``source`` itself when the
    file has none."""
    configs = layer_configs(metadata, file)
    return QuantMetadataView(source, configs) if configs else source


def open_checkpoint_tensors(header: CheckpointHeader) -> Mapping[str, Any]:
    """The tensors of the file ``header`` describes, memory-mapped, as ComfyUI's loaders see
    them: its ``_quantization_metadata`` applied (:func:`with_quant_metadata`)."""
    from loom.memory.loading import open_safetensors

    return with_quant_metadata(open_safetensors(header.path), header.metadata, header.path.name)


__all__ = [
    "QUANT_METADATA",
    "QuantMetadataView",
    "layer_configs",
    "open_checkpoint_tensors",
    "with_quant_metadata",
]
