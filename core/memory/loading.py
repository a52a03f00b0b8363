"""Loading weights into modules built on the meta device: no random init, no second copy.

A family builds its module under :func:`build_on_meta` (parameters have shapes but no
storage), then :func:`load_into_module` checks the keys against a :class:`LoadPolicy` and
assigns the memory-mapped tensors (``load_state_dict(..., assign=True)``). Weights keep the
dtype they were stored in unless the policy asks for another.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import torch
from torch import nn

from loom.errors import ModelFileError
from loom.memory.patches import resolve, set_tensor
from loom.memory.safetensors_file import SafetensorsFile

log = logging.getLogger(__name__)

M = TypeVar("M", bound=nn.Module)
KEY_POLICIES = ("error", "warn", "ignore")


@attrs.frozen
class LoadPolicy:
    """What a family tolerates when loading: missing/unexpected keys and storage dtype.

    :param missing: ``"error"`` (default), ``"warn"`` (missing tensors are zero-filled) or
        ``"ignore"``.
    :param unexpected: ``"warn"`` (default), ``"error"`` or ``"ignore"``.
    :param dtype: convert floating-point weights to this storage dtype (``None`` keeps the
        file's dtype, which is the point: fp16/bf16/fp8 stay as they are).
    """

    missing: str = attrs.field(default="error", validator=attrs.validators.in_(KEY_POLICIES))
    unexpected: str = attrs.field(default="warn", validator=attrs.validators.in_(KEY_POLICIES))
    dtype: torch.dtype | None = None


@attrs.frozen
class LoadReport:
    """What loading found: key differences, and tensors left without storage."""

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    left_on_meta: tuple[str, ...] = ()


class PrefixView(Mapping[str, Any]):
    """The entries of ``source`` under ``prefix``, prefix removed; nothing is read or copied."""

    def __init__(
        self, source: Mapping[str, Any], prefix: str, keys: Sequence[str] | None = None
    ) -> None:
        self.source = source
        self.prefix = prefix
        self._keys = [
            k[len(prefix) :] for k in (keys if keys is not None else source) if k.startswith(prefix)
        ]

    def __getitem__(self, key: str) -> Any:
        if not key or key not in self._index:
            raise KeyError(key)
        return self.source[self.prefix + key]

    @property
    def _index(self) -> set[str]:
        index = self.__dict__.get("_index_set")
        if index is None:
            index = self.__dict__["_index_set"] = set(self._keys)
        return index

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def split_state_dict_by_prefix(
    state_dict: Mapping[str, Any], prefixes: Sequence[str]
) -> dict[str, Mapping[str, Any]]:
    """Lazy views of ``state_dict`` per prefix (stripped), plus ``""`` for the rest.

    Longest prefix wins (``"model.diffusion_model."`` before ``"model."``). Views read
    entries on access only, so splitting a memory-mapped checkpoint materialises nothing.
    """
    ordered = sorted(prefixes, key=len, reverse=True)
    groups: dict[str, list[str]] = {p: [] for p in prefixes}
    rest: list[str] = []
    for key in state_dict:
        owner = next((p for p in ordered if key.startswith(p)), None)
        (groups[owner] if owner is not None else rest).append(key)
    views: dict[str, Mapping[str, Any]] = {
        p: PrefixView(state_dict, p, keys) for p, keys in groups.items()
    }
    views[""] = PrefixView(state_dict, "", rest)
    return views


def open_safetensors(path: str | os.PathLike[str], *, prefetch: bool = True) -> SafetensorsFile:
    """Open a ``.safetensors`` file memory-mapped (a lazy ``Mapping[str, Tensor]``)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    return SafetensorsFile(path, prefetch=prefetch)


def build_on_meta(factory: Callable[..., M], *args: Any, **kwargs: Any) -> M:
    """``factory(*args, **kwargs)`` with every tensor on the meta device (no init cost)."""
    with torch.device("meta"):
        return factory(*args, **kwargs)


def _shown(keys: Sequence[str], limit: int = 8) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _check_keys(kind: str, keys: Sequence[str], how: str, source: str) -> None:
    if not keys or how == "ignore":
        return
    text = f"{source}: {len(keys)} {kind} keys: {_shown(keys)}"
    if how == "error":
        raise ModelFileError(text, hint="is this the right file for this model?")
    log.warning("%s", text)


def load_into_module(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    policy: LoadPolicy = LoadPolicy(),
    *,
    source: str = "state dict",
) -> LoadReport:
    """Assign ``state_dict``'s tensors to ``module`` (built on meta or not) per ``policy``.

    Only the tensors the module needs are read from ``state_dict`` (lazy views stay lazy
    for the rest). Shape mismatches are always errors. Parameters end with
    ``requires_grad=False``: this is an inference engine.
    """
    expected = module.state_dict(keep_vars=True)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    _check_keys("missing", missing, policy.missing, source)
    _check_keys("unexpected", unexpected, policy.unexpected, source)
    tensors = {}
    for key, target in expected.items():
        if key not in state_dict:
            continue
        tensor = state_dict[key]
        if tuple(tensor.shape) != tuple(target.shape):
            raise ModelFileError(
                f"{source}: tensor {key!r} has shape {tuple(tensor.shape)}, "
                f"the model expects {tuple(target.shape)}",
                hint="is this the right file for this model?",
            )
        if policy.dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(policy.dtype)
        tensors[key] = tensor
    module.load_state_dict(tensors, strict=False, assign=True)
    for param in module.parameters():
        param.requires_grad_(False)
    _fill_missing(module, missing)
    left = tuple(name for name, t in _named_tensors(module) if t.is_meta)
    if left:
        log.debug("%s: tensors without storage after load: %s", source, _shown(left))
    return LoadReport(tuple(missing), tuple(unexpected), left)


def _named_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [*module.named_parameters(), *module.named_buffers()]


def _fill_missing(module: nn.Module, missing: Sequence[str]) -> None:
    """Zero-fill tensors that were missing and are still on meta (policy warn/ignore)."""
    for key in missing:
        owner, name = resolve(module, key)
        tensor = owner._parameters.get(name)
        if tensor is None:
            tensor = owner._buffers.get(name)
        if tensor is not None and tensor.is_meta:
            set_tensor(owner, name, torch.zeros(tensor.shape, dtype=tensor.dtype))


def load_module(
    factory: Callable[[], M],
    source: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    policy: LoadPolicy = LoadPolicy(),
) -> tuple[M, LoadReport]:
    """Build ``factory()`` on meta and load ``source`` (a safetensors path or a mapping) into it."""
    if isinstance(source, (str, os.PathLike)):
        state_dict: Mapping[str, torch.Tensor] = open_safetensors(source)
        label = Path(source).name
    else:
        state_dict, label = source, "state dict"
    start = time.perf_counter()
    module = build_on_meta(factory)
    report = load_into_module(module, state_dict, policy, source=label)
    log.info(
        "loaded %s into %s: %d tensors, %.1f MB, %.2f s",
        label,
        type(module).__name__,
        len(state_dict),
        sum(t.numel() * t.element_size() for t in module.state_dict().values()) / 1e6,
        time.perf_counter() - start,
    )
    return module, report
