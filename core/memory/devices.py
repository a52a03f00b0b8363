"""Compute devices: discovery and memory views.

Device probing is a function (:func:`discover_devices`) that returns plain
:class:`DeviceInfo` values; nothing is probed at import. A *simulated* device is a CPU
device with a fake capacity: the memory manager then budgets against that capacity, which
is how tests (and ``--vram-budget``) drive eviction and partial loading without a GPU.
"""

from __future__ import annotations

import logging
import sys

import attrs
import psutil
import torch

log = logging.getLogger(__name__)

DEVICE_TYPES = ("cuda", "xpu", "mps", "cpu")


@attrs.frozen
class DeviceInfo:
    """One device weights can live on: what it is, how big, and which dtypes it computes in.

    ``total_bytes`` is the capacity at discovery time (for a simulated device, the fake
    capacity). ``simulated`` devices compute on ``torch_device`` (the CPU) but are budgeted
    as if they were an accelerator of ``total_bytes``.
    """

    type: str
    index: int | None = None
    name: str = ""
    total_bytes: int = 0
    supports_bf16: bool = False
    supports_fp16: bool = True
    simulated: bool = False
    #: ComfyUI would compute a model in fp16 here (its ``should_use_fp16``), so it merges
    #: weight patches in fp16 (:func:`loom.memory.compute.merge_dtype_for`)
    prefers_fp16: bool = False

    @property
    def torch_device(self) -> torch.device:
        if self.simulated or self.type == "cpu":
            return torch.device("cpu")
        return torch.device(self.type, self.index)

    @property
    def is_accelerator(self) -> bool:
        """True for anything weights must be moved to (a simulated device counts)."""
        return self.simulated or self.type != "cpu"

    def __str__(self) -> str:
        label = self.type if self.index is None else f"{self.type}:{self.index}"
        return f"{label} (simulated)" if self.simulated else label


@attrs.frozen
class MemoryView:
    """Memory of one device as the manager sees it (bytes)."""

    device: str
    total_bytes: int
    free_bytes: int
    used_by_models_bytes: int
    budget_bytes: int


def cpu_has_native_bf16() -> bool:
    """True where the CPU has bf16 arithmetic instructions (x86 AVX512-BF16 or AMX), so
    bf16 compute runs about 2-2.5x as fast as fp32 rather than emulated and slower."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for probe in probes:
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except RuntimeError as exc:  # a build without the probe's backend
            log.debug("torch.cpu.%s failed: %s", probe, exc)
    return False


def cpu_device() -> DeviceInfo:
    """The host CPU as a :class:`DeviceInfo`."""
    return DeviceInfo(
        type="cpu",
        name="cpu",
        total_bytes=psutil.virtual_memory().total,
        supports_bf16=cpu_has_native_bf16(),
    )


def simulated_device(capacity_bytes: int, name: str = "sim") -> DeviceInfo:
    """A CPU-backed device budgeted as an accelerator of ``capacity_bytes`` (for tests)."""
    return DeviceInfo(
        type="cpu", name=name, total_bytes=int(capacity_bytes), supports_bf16=True, simulated=True
    )


#: GPUs ComfyUI computes in fp32 on Linux (fp16 runs slower there), in fp16 on Windows
_PASCAL_NAMES = (
    "1080", "1070", "titan x", "p3000", "p3200", "p4000", "p4200", "p5000", "p5200", "p6000",
    "1060", "1050", "p40", "p100", "p6", "p4",
)  # fmt: skip
#: GPUs whose fp16 ComfyUI treats as broken (matched case-sensitively, as ComfyUI does)
_BROKEN_FP16_NAMES = (
    "1660", "1650", "1630", "T500", "T550", "T600", "MX550", "MX450", "CMP 30HX", "T2000",
    "T1000", "T1200",
)  # fmt: skip


def cuda_prefers_fp16(major: int, name: str, *, hip: bool = False, windows: bool = False) -> bool:
    """ComfyUI's ``should_use_fp16`` for a CUDA/ROCm GPU of compute capability ``major``
    named ``name``: always on ROCm; compute capability 8+ yes, below 6 no; Pascal cards
    only on Windows; below 7 no; the GTX 16 / T-series cards with broken fp16 no."""
    if hip or major >= 8:
        return True
    if major < 6:
        return False
    if any(part in name.lower() for part in _PASCAL_NAMES):
        return windows
    if major < 7:
        return False
    return not any(part in name for part in _BROKEN_FP16_NAMES)


def _cuda_devices() -> list[DeviceInfo]:
    found = []
    hip = torch.version.hip is not None
    windows = sys.platform == "win32"
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        found.append(
            DeviceInfo(
                type="cuda",
                index=index,
                name=props.name,
                total_bytes=props.total_memory,
                supports_bf16=torch.cuda.is_bf16_supported() if index == 0 else props.major >= 8,
                prefers_fp16=cuda_prefers_fp16(props.major, props.name, hip=hip, windows=windows),
            )
        )
    return found


def _xpu_devices() -> list[DeviceInfo]:
    xpu = getattr(torch, "xpu", None)
    if xpu is None or not xpu.is_available():
        return []
    found = []
    for index in range(xpu.device_count()):
        props = xpu.get_device_properties(index)
        found.append(
            DeviceInfo(
                type="xpu",
                index=index,
                name=props.name,
                total_bytes=props.total_memory,
                supports_bf16=True,
                prefers_fp16=bool(getattr(props, "has_fp16", True)),
            )
        )
    return found


def _mps_devices() -> list[DeviceInfo]:
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        return []
    total = psutil.virtual_memory().total
    try:
        total = int(torch.mps.recommended_max_memory())
    except (AttributeError, RuntimeError) as exc:
        log.debug("mps recommended_max_memory unavailable: %s", exc)
    return [
        DeviceInfo(
            type="mps",
            index=0,
            name="mps",
            total_bytes=total,
            supports_bf16=False,
            prefers_fp16=True,
        )
    ]


def discover_devices() -> list[DeviceInfo]:
    """Every device torch can compute on here, accelerators first, the CPU last."""
    found: list[DeviceInfo] = []
    if torch.cuda.is_available():
        found += _cuda_devices()
    found += _xpu_devices()
    found += _mps_devices()
    found.append(cpu_device())
    log.debug("devices: %s", ", ".join(f"{d} {d.total_bytes / 2**30:.1f} GiB" for d in found))
    return found


def free_bytes(device: DeviceInfo) -> int:
    """Bytes the device could still allocate, as reported by its driver (or the OS)."""
    if device.simulated or device.type == "cpu":
        return (
            int(psutil.virtual_memory().available) if not device.simulated else device.total_bytes
        )
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device.torch_device)
        stats = torch.cuda.memory_stats(device.torch_device)
        cached_free = stats.get("reserved_bytes.all.current", 0) - stats.get(
            "allocated_bytes.all.current", 0
        )
        return int(free + cached_free)
    if device.type == "xpu":
        return int(device.total_bytes - torch.xpu.memory_allocated(device.torch_device))
    if device.type == "mps":
        return int(device.total_bytes - torch.mps.current_allocated_memory())
    return 0
