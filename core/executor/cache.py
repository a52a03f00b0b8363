"""Content-keyed output caching.

A node's signature digests its class, its IS_CHANGED value, its constant inputs and the
signatures of the nodes it links to (plus its id when it is not idempotent or asks for
``UNIQUE_ID``). Signatures are computed once per node in topological order, each from its
inputs' digests, so the cost is linear and nothing recurses. Node ids do not enter the key
otherwise: the same sub-chain under other ids (a subgraph instance) hits the same entry.

Policies (ComfyUI's ``--cache-*`` flags): ``classic`` keeps what the current prompt uses,
``lru`` keeps the N most recently used entries, ``ram`` keeps everything until free RAM
drops below a headroom, ``none`` keeps nothing between prompts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from loom.executor.graph import is_link, link_source

log = logging.getLogger(__name__)


@attrs.frozen
class CachedOutput:
    """A node's outputs (one list per output slot) and its UI data."""

    values: tuple[list[Any], ...]
    ui: Mapping[str, Any] | None = None


_SCALARS = (str, int, float, bool, type(None))


def _constant_key(value: Any) -> str:
    if type(value) in _SCALARS:
        return f"{type(value).__name__}:{value!r}"
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)
    except (TypeError, ValueError):
        return repr(value)


def node_signature(
    class_type: str,
    inputs: Mapping[str, Any],
    upstream: Mapping[str, bytes],
    fingerprint: Any = None,
    node_id: str | None = None,
) -> bytes:
    """Digest of one node given its upstream nodes' digests (``upstream[node_id]``)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(class_type.encode())
    h.update(b"\x00")
    h.update(_constant_key(fingerprint).encode())
    if node_id is not None:
        h.update(b"\x01id:" + node_id.encode())
    for name in sorted(inputs):
        value = inputs[name]
        h.update(b"\x02" + name.encode() + b"=")
        if is_link(value):
            source, slot = link_source(value)
            h.update(b"L" + upstream.get(source, b"?" + source.encode()) + str(slot).encode())
        else:
            h.update(b"C" + _constant_key(value).encode())
    return h.digest()


def never_cached() -> str:
    """A fingerprint that matches nothing (ComfyUI turns a raising IS_CHANGED into NaN)."""
    return f"never-cached:{uuid.uuid4().hex}"


class OutputCache:
    """Node outputs by signature, with one of the eviction policies."""

    def __init__(
        self, policy: str = "classic", size: int = 100, ram_headroom_gb: float = 4.0
    ) -> None:
        if policy not in ("classic", "lru", "ram", "none"):
            raise ValueError(f"unknown cache policy {policy!r}")
        self.policy = policy
        self.size = size
        self.ram_headroom_bytes = int(ram_headroom_gb * 1024**3)
        self._entries: OrderedDict[bytes, CachedOutput] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, signature: bytes) -> bool:
        return signature in self._entries

    def get(self, signature: bytes) -> CachedOutput | None:
        entry = self._entries.get(signature)
        if entry is not None and self.policy == "lru":
            self._entries.move_to_end(signature)
        return entry

    def put(self, signature: bytes, entry: CachedOutput) -> None:
        self._entries[signature] = entry
        self._entries.move_to_end(signature)
        if self.policy == "lru":
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        elif self.policy == "ram":
            self._evict_for_ram()

    def begin_prompt(self, signatures: Iterable[bytes]) -> None:
        """Called with every signature of the next prompt before it runs."""
        if self.policy == "classic":
            keep = set(signatures)
            for signature in [s for s in self._entries if s not in keep]:
                del self._entries[signature]

    def end_prompt(self) -> None:
        if self.policy == "none":
            self._entries.clear()

    def clear(self) -> None:
        self._entries.clear()

    def _evict_for_ram(self) -> None:
        import psutil

        while (
            len(self._entries) > 1 and psutil.virtual_memory().available < self.ram_headroom_bytes
        ):
            signature, _ = self._entries.popitem(last=False)
            log.debug("cache: evicted %s for RAM headroom", signature.hex())
