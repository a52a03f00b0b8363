"""The ``register`` callbacks registration hooks receive, as Protocols.

Each hook in :mod:`loom.hookspecs` names its callback's type here, so a plugin author (and a
type checker) reads the exact signature instead of prose. The registry builds one callback
per plugin and hook, bound to that plugin's name (see :func:`loom.registry.collect`); a
registration it rejects (a duplicate id, a malformed node) is reported and the others go on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:
    from loom.folders import FolderKind
    from loom.types import (
        CheckpointHeader,
        LoadedParts,
        LoadRequest,
        ModelFamily,
        ModelPart,
        Sampler,
        SamplerInfo,
        Scheduler,
        WeightAdapter,
    )


class RegisterNode(Protocol):
    """``register_nodes``' callback: add one node class."""

    def __call__(
        self,
        node_class: type,
        class_type: str | None = None,
        display_name: str | None = None,
        python_module: str | None = None,
    ) -> None:
        """Register ``node_class`` (an ``@loom.node`` class or a classic ComfyUI class).

        :param class_type: the node id; required for classic classes, whose id lives in
            ``NODE_CLASS_MAPPINGS``; for a declarative class it must match its declaration.
        :param display_name: overrides the declared display name.
        :param python_module: what ``/object_info`` reports as the node's module.
        """


class RegisterFolderKind(Protocol):
    """``register_model_folders``' callback: declare one model folder kind."""

    def __call__(self, kind: FolderKind) -> None: ...


class RegisterModelFamily(Protocol):
    """``register_model_families``' callback: add one model family (unique ``family.name``)."""

    def __call__(self, family: ModelFamily) -> None: ...


class RegisterSampler(Protocol):
    """``register_samplers``' callback: add one sampler under its ComfyUI name, with the
    :class:`~loom.samplers.SamplerInfo` that says how a sampling run must treat it."""

    def __call__(self, name: str, sampler: Sampler, info: SamplerInfo | None = None) -> None: ...


class RegisterScheduler(Protocol):
    """``register_schedulers``' callback: add one sigma schedule under its ComfyUI name."""

    def __call__(self, name: str, scheduler: Scheduler) -> None: ...


class RegisterWeightAdapter(Protocol):
    """``register_weight_adapters``' callback: add one adapter format (unique ``adapter.name``)."""

    def __call__(self, adapter: WeightAdapter) -> None: ...


@attrs.define(eq=False)
class DeferredModelFamily:
    """A :class:`~loom.types.ModelFamily` registered by name whose modules (torch, the model
    code) are imported only when a file is first detected or loaded, so registering every
    plugin (``loom nodes``, ``loom validate``, ``/object_info``) stays cheap.

    ``build`` returns the real family; it is called once, on the first ``detect`` or ``load``.
    """

    name: str
    build: Callable[[], ModelFamily]
    _family: ModelFamily | None = attrs.field(default=None, init=False)

    @property
    def family(self) -> ModelFamily:
        """The real family (built on first use)."""
        if self._family is None:
            self._family = self.build()
        return self._family

    def detect(self, header: CheckpointHeader, part: ModelPart) -> float:
        """The real family's score."""
        return self.family.detect(header, part)

    def load(self, header: CheckpointHeader, part: ModelPart, request: LoadRequest) -> LoadedParts:
        """The real family's load."""
        return self.family.load(header, part, request)


__all__ = [
    "DeferredModelFamily",
    "RegisterFolderKind",
    "RegisterModelFamily",
    "RegisterNode",
    "RegisterSampler",
    "RegisterScheduler",
    "RegisterWeightAdapter",
]
