"""Compute dtype and device: the user's typed choice, and the one decision made from it.

A dtype arrives as text once, at an edge (``--compute-dtype``, ``Settings(compute_dtype=...)``),
and is parsed there into a :class:`DtypeChoice`. The memory manager turns that choice and its
device into a ``torch.dtype`` (:func:`compute_dtype_for`), and answers each handle with a
:class:`ComputeTarget`: the device and dtype that handle's forward runs in. Model code reads
``handle.compute_target`` and never works either out for itself.

This module imports torch only inside functions: :mod:`loom.settings` imports
:class:`DtypeChoice`, and settings must stay light.
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING

import attrs

from loom.errors import LoomError

if TYPE_CHECKING:
    import torch

    from loom.memory.devices import DeviceInfo

log = logging.getLogger(__name__)

#: spellings accepted for each fixed dtype (torch's names too)
_ALIASES = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}


class DtypeChoice(enum.Enum):
    """The compute dtype a user chose (``--compute-dtype``).

    ``DEVICE_DEFAULT``: bf16 (else fp16) on accelerators, fp32 on the CPU, so CPU results
    match a float32 reference and ComfyUI. ``AUTO``: the fastest dtype the device computes
    natively, which is also bf16 on CPUs with bf16 instructions. ``FP32`` / ``FP16`` /
    ``BF16``: that dtype on every device.
    """

    DEVICE_DEFAULT = "default"
    AUTO = "auto"
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"

    @classmethod
    def parse(cls, value: DtypeChoice | str | None) -> DtypeChoice:
        """``value`` as a choice: a choice as is, ``None`` as ``DEVICE_DEFAULT``, text by
        name (``"bf16"``, ``"bfloat16"``, ``"auto"``, case-insensitive).

        :raises LoomError: for text that names no choice, listing the ones that do.
        """
        if value is None:
            return cls.DEVICE_DEFAULT
        if isinstance(value, cls):
            return value
        text = str(value).strip().lower()
        try:
            return cls(_ALIASES.get(text, text))
        except ValueError:
            names = ", ".join(choice.value for choice in cls)
            raise LoomError(
                f"unknown compute dtype {value!r}", hint=f"use one of {names}"
            ) from None

    @property
    def fixed_dtype(self) -> torch.dtype | None:
        """The dtype this choice always means, or None for the per-device policies."""
        import torch

        return {
            DtypeChoice.FP32: torch.float32,
            DtypeChoice.FP16: torch.float16,
            DtypeChoice.BF16: torch.bfloat16,
        }.get(self)


@attrs.frozen
class ComputeTarget:
    """Where a handle's forward runs and in which dtype: the memory manager's answer.

    Model code moves its inputs with ``x.to(target.device, target.dtype)``; the cast
    layers inside the module compute in ``target.dtype`` whatever the weights are stored in.
    """

    device: torch.device
    dtype: torch.dtype
    #: the dtype weight patches (LoRA, merges) are merged in here (:func:`merge_dtype_for`)
    merge_dtype: torch.dtype = attrs.field(factory=lambda: _float32())


def _float32() -> torch.dtype:
    import torch

    return torch.float32


def merge_dtype_for(
    device: DeviceInfo, requested: DtypeChoice | torch.dtype | None = None
) -> torch.dtype:
    """The dtype weight patches are merged in on ``device``: ComfyUI's LoRA compute dtype.

    ComfyUI casts a weight to this dtype on its load device before adding patches
    (``lora_compute_dtype``): float16 where it would compute a model in fp16
    (``should_use_fp16``, read once per device into :attr:`DeviceInfo.prefers_fp16`),
    float32 elsewhere, and always float32 on the CPU (simulated devices compute there).
    Asking for fp16 or fp32 compute (``--compute-dtype``, ComfyUI's ``--force-fp16`` /
    ``--force-fp32``) forces that merge dtype on accelerators.
    """
    import torch

    if device.simulated or device.type == "cpu":
        return torch.float32
    if requested in (DtypeChoice.FP16, torch.float16):
        return torch.float16
    if requested in (DtypeChoice.FP32, torch.float32):
        return torch.float32
    return torch.float16 if device.prefers_fp16 else torch.float32


def compute_dtype_for(
    device: DeviceInfo, requested: DtypeChoice | torch.dtype | None = None
) -> torch.dtype:
    """The dtype layers compute in on ``device``: ``requested`` if it fixes one, else the policy.

    By default accelerators compute in bf16 where supported, else fp16, and the CPU (and
    simulated devices) in fp32. :attr:`DtypeChoice.AUTO` picks the fastest dtype the device
    computes natively: bf16 also on CPUs with bf16 instructions. Asking for bf16 on a CPU
    without them works, with a warning.
    """
    import torch

    if requested is None:
        requested = DtypeChoice.DEVICE_DEFAULT
    if not isinstance(requested, (DtypeChoice, torch.dtype)):
        raise TypeError(
            f"compute dtype {requested!r} is neither a torch.dtype nor a DtypeChoice "
            "(parse text with DtypeChoice.parse where it enters)"
        )
    fixed = requested if isinstance(requested, torch.dtype) else requested.fixed_dtype
    on_cpu = device.simulated or device.type == "cpu"
    if fixed is not None:
        if fixed == torch.bfloat16 and on_cpu and not device.supports_bf16:
            log.warning(
                "this CPU has no bf16 instructions: bf16 compute is emulated and "
                "slower than fp32 (use --compute-dtype fp32)"
            )
        return fixed
    if on_cpu:
        native = requested is DtypeChoice.AUTO and device.supports_bf16 and not device.simulated
        return torch.bfloat16 if native else torch.float32
    if device.supports_bf16:
        return torch.bfloat16
    return torch.float16 if device.supports_fp16 else torch.float32
