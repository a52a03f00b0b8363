"""Model handles: what MODEL / CLIP / VAE values carry between nodes.

A :class:`ModelHandle` wraps a torch module. ``clone()`` is cheap: clones share the module
(and so the base weights) and each keeps its own weight patches and object patches.
Patches only take effect while the memory manager has the handle loaded; at most one clone
of a module is applied at a time, and loading another clone first reverts it. Where and in
which dtype the module computes is the manager's answer, read as ``compute_target``.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import torch
from torch import nn

from loom.memory.compute import ComputeTarget
from loom.memory.patches import WeightPatch, patch_keys_present
from loom.samplers import GuidanceHooks

if TYPE_CHECKING:
    from loom.memory.merged_cache import MergedWeightCache
    from loom.memory.placement import Placement
    from loom.samplers import DenoiseMaskFunction

log = logging.getLogger(__name__)

#: ``estimator(input_shape, dtype) -> bytes`` one forward needs beyond the weights.
MemoryEstimator = Callable[[tuple[int, ...], torch.dtype], int]

_Handle = TypeVar("_Handle", bound="ModelHandle")


@attrs.define(eq=False)
class SharedModel:
    """State shared by a handle and all its clones: the module and where it is placed."""

    module: nn.Module
    name: str
    placement: Placement | None = None


def tensor_bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer of ``module`` (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for tensor in (*module.parameters(), *module.buffers()):
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += tensor.numel() * tensor.element_size()
    return total


def default_memory_estimate(input_shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """Heuristic activation memory for one forward: 64 copies of the input, plus 64 MiB."""
    return int(math.prod(input_shape) * dtype.itemsize * 64 + 64 * 2**20)


class ModelHandle:
    """A torch module plus the patches one node output wants applied to it.

    :param module: the model; usually built on the meta device and loaded with
        :func:`loom.memory.load_module`, weights in their stored dtype on the CPU.
    :param name: a label for logs and accounting.
    :param memory_estimator: ``(input_shape, dtype) -> bytes`` one forward needs (set by
        the model family); the default is :func:`default_memory_estimate`.
    :param compute_dtype: a dtype this handle must compute in whatever the manager's
        policy; ``None`` (usual) leaves the choice to the memory manager. Either way the
        answer is read from :attr:`compute_target`.
    :param supported_dtypes: the compute dtypes the model gives correct results in
        (ComfyUI's ``working_dtypes``; e.g. bf16 and fp32 for a VAE that overflows in
        fp16); the manager computes in float32 where its policy picks another. Empty: any.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        name: str | None = None,
        memory_estimator: MemoryEstimator | None = None,
        compute_dtype: torch.dtype | None = None,
        supported_dtypes: tuple[torch.dtype, ...] = (),
    ) -> None:
        self._shared = SharedModel(module, name or type(module).__name__)
        self.weight_patches: dict[str, list[tuple[WeightPatch, float]]] = {}
        #: What ComfyUI's model puts before this module's keys (``"diffusion_model."``):
        #: the seeds of its stochastic fp8 rounding of patched weights hash those names.
        self.comfy_prefix = ""
        self.object_patches: dict[str, Any] = {}
        self.memory_estimator = memory_estimator
        self.compute_dtype = compute_dtype
        self.supported_dtypes = tuple(supported_dtypes)
        #: The per-step denoise-mask rewrite sampling applies to masked runs (a
        #: :class:`loom.samplers.DenoiseMaskFunction`); ``None``: the mask as given.
        self.denoise_mask_function: DenoiseMaskFunction | None = None
        #: How this handle changes classifier-free guidance (RescaleCFG, CFGZeroStar ...);
        #: immutable, so clones share it until a node gives a clone a new one.
        self.guidance: GuidanceHooks = GuidanceHooks()
        #: Where loading keeps merged weights for the next load of a clone with the same
        #: patches (:class:`loom.memory.merged_cache.MergedWeightCache`); None: not kept.
        self.merged_cache: MergedWeightCache | None = None

    def __repr__(self) -> str:
        return (
            f"<ModelHandle {self.name} patches={len(self.weight_patches)} loaded={self.is_loaded}>"
        )

    @property
    def module(self) -> nn.Module:
        """The wrapped module (shared with every clone)."""
        return self._shared.module

    @property
    def name(self) -> str:
        return self._shared.name

    @property
    def shared(self) -> SharedModel:
        return self._shared

    @property
    def is_loaded(self) -> bool:
        """True while this handle's patches are the ones applied to the module."""
        placement = self._shared.placement
        return placement is not None and placement.handle is self

    @property
    def compute_target(self) -> ComputeTarget:
        """Where and in which dtype this handle's forward runs; model code moves its inputs
        there and reads the answer nowhere else.

        Once the memory manager has loaded the module, its answer
        (:meth:`loom.memory.MemoryManager.target_for`); partially loaded modules keep some
        weights on the CPU, so an arbitrary parameter's device is not it. A module no
        manager placed runs where its weights are, in ``compute_dtype`` or float32.
        """
        placement = self._shared.placement
        if placement is not None:
            return placement.target
        first = next(iter(self.module.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
        return ComputeTarget(device, self.compute_dtype or torch.float32)

    def clone(self: _Handle) -> _Handle:
        """A handle of the same class on the same module, with its own copy of the patches.

        Every other attribute (a subclass's too) is shared with the original, so subclasses
        need no ``clone`` of their own unless they hold something a clone must not share.
        """
        other = copy.copy(self)
        other.weight_patches = {key: list(entries) for key, entries in self.weight_patches.items()}
        other.object_patches = dict(self.object_patches)
        return other

    def is_clone(self, other: object) -> bool:
        """True if ``other`` is a handle sharing this handle's module."""
        return isinstance(other, ModelHandle) and other._shared is self._shared

    def add_patches(self, patches: Mapping[str, WeightPatch], strength: float = 1.0) -> list[str]:
        """Queue ``patches`` (weight key -> patch) at ``strength``; return the keys used.

        Keys that name no tensor of the module are ignored (adapters often carry keys for
        other parts of a checkpoint). Takes effect the next time the handle is loaded.
        """
        used = patch_keys_present(self.module, patches)
        for key in used:
            self.weight_patches.setdefault(key, []).append((patches[key], float(strength)))
        if len(used) != len(patches):
            log.debug(
                "%s: %d of %d patch keys match no weight",
                self.name,
                len(patches) - len(used),
                len(patches),
            )
        return used

    def add_object_patch(self, path: str, value: Any) -> None:
        """Replace attribute ``path`` (dotted, from the module) by ``value`` while loaded."""
        self.object_patches[path] = value

    def get_model_object(self, path: str) -> Any:
        """Attribute ``path`` as this handle sees it: its object patch, else the module's."""
        if path in self.object_patches:
            return self.object_patches[path]
        owner_path, _, name = path.rpartition(".")
        owner = self.module.get_submodule(owner_path) if owner_path else self.module
        return getattr(owner, name)

    def size_bytes(self) -> int:
        """Bytes of the module's weights in their stored dtypes."""
        return tensor_bytes(self.module)

    def memory_estimate(self, input_shape: tuple[int, ...], dtype: torch.dtype) -> int:
        """Bytes one forward on an input of ``input_shape`` needs besides the weights."""
        estimator = self.memory_estimator or default_memory_estimate
        return int(estimator(tuple(input_shape), dtype))

    def patch_signature(self) -> tuple[Any, ...]:
        """Identity of the applied state: equal signatures need no re-patching."""
        weights = tuple(
            (key, tuple((id(patch), strength) for patch, strength in entries))
            for key, entries in sorted(self.weight_patches.items())
        )
        objects = tuple((path, id(value)) for path, value in sorted(self.object_patches.items()))
        return weights, objects, self.compute_dtype
