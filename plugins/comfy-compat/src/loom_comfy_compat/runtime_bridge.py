"""What ``comfy.model_management`` and ``comfy.utils`` answer, from the bound runtime:
its memory manager's device, its executor's interrupt flag, the running node's progress."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from loom.errors import ExecutionInterrupted, LoomError
from loom.frontend import current_context
from loom_comfy_compat.environment import ENV

log = logging.getLogger(__name__)

#: ComfyUI's interruption exception is Loom's: raising either stops the prompt the same way.
InterruptProcessingException = ExecutionInterrupted


def _memory() -> Any:
    return ENV.require_runtime("comfy.model_management").memory


def get_torch_device() -> Any:
    return _memory().device.torch_device


def get_torch_device_name(device: Any = None) -> str:
    info = _memory().device
    device = str(info.torch_device)
    return device if info.name in ("", device, info.type) else f"{device} {info.name}"


def intermediate_device() -> Any:
    import torch

    return torch.device("cpu")  # Loom keeps values between nodes on the CPU


def unet_offload_device() -> Any:
    import torch

    return torch.device("cpu")


text_encoder_offload_device = vae_offload_device = unet_offload_device


def text_encoder_device() -> Any:
    return get_torch_device()


def vae_device() -> Any:
    return get_torch_device()


def is_device_cpu(device: Any) -> bool:
    return getattr(device, "type", str(device)) == "cpu"


def is_device_mps(device: Any) -> bool:
    return getattr(device, "type", str(device)) == "mps"


def is_device_cuda(device: Any) -> bool:
    return getattr(device, "type", str(device)) == "cuda"


def get_autocast_device(dev: Any) -> str:
    return getattr(dev, "type", "cuda")


def xformers_enabled() -> bool:
    return False  # Loom's attention is torch's scaled_dot_product_attention


def get_free_memory(dev: Any = None, torch_free_too: bool = False) -> int | tuple[int, int]:
    from loom.memory import free_bytes

    free = free_bytes(_memory().device)
    return (free, free) if torch_free_too else free


def soft_empty_cache(force: bool = False) -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def unload_all_models() -> None:
    _memory().unload_all(reason="a custom node asked (comfy.model_management)")


def _interrupt_flag() -> Any:
    runtime = ENV.require_runtime("comfy.model_management")
    return runtime.executor.interrupt_flag


def processing_interrupted() -> bool:
    return _interrupt_flag().is_set()


def throw_exception_if_processing_interrupted() -> None:
    _interrupt_flag().check()


def interrupt_current_processing(value: bool = True) -> None:
    flag = _interrupt_flag()
    flag.set() if value else flag.clear()


# --- comfy.utils ------------------------------------------------------------------------


class ProgressBar:
    """A node's progress, drawn by the CLI and sent over the websocket as Loom's own.

    Made inside a running node it reports for that node; elsewhere updates are counted and
    dropped (ComfyUI behaves the same without a hook).
    """

    def __init__(self, total: int, node_id: str | None = None) -> None:
        self.total = int(total)
        self.current = 0
        self._ctx = current_context()

    def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = int(total)
        self.current = min(int(value), self.total) if self.total else int(value)
        ctx = self._ctx or current_context()
        if ctx is not None:
            ctx.progress(self.current, self.total)

    def update(self, value: int) -> None:
        self.update_absolute(self.current + int(value))


class PickleRefused(LoomError):
    """A pack asked to load a file that is not safetensors."""


def load_torch_file(
    ckpt: str, safe_load: bool = False, device: Any = None, return_metadata: bool = False
) -> Any:
    """A safetensors file's tensors (and its metadata); other formats are refused."""
    path = Path(ckpt)
    if path.suffix.lower() not in (".safetensors", ".sft"):
        raise PickleRefused(
            f"refusing to load {path.name}: Loom loads only .safetensors files, never pickle "
            "(.ckpt/.pt/.pth/.bin can run code when loaded)",
            hint="convert the file to safetensors, or use a safetensors release of it",
        )
    from safetensors import safe_open

    tensors = {}
    with safe_open(str(path), framework="pt", device=str(device or "cpu")) as handle:
        metadata = handle.metadata()
        for key in handle.keys():
            tensors[key] = handle.get_tensor(key)
    return (tensors, metadata) if return_metadata else tensors


def save_torch_file(sd: dict[str, Any], ckpt: str, metadata: dict[str, str] | None = None) -> None:
    from pathlib import Path

    from loom.memory import write_safetensors

    write_safetensors(Path(ckpt), {k: v.contiguous() for k, v in sd.items()}, metadata)


def common_upscale(samples: Any, width: int, height: int, upscale_method: str, crop: str) -> Any:
    """Resize ``[B, C, H, W]`` samples (optionally centre-cropping to the new aspect)."""
    import torch.nn.functional as F

    if crop == "center":
        old_w, old_h = samples.shape[-1], samples.shape[-2]
        old_aspect, new_aspect = old_w / old_h, width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
        samples = samples.narrow(-2, y, old_h - y * 2).narrow(-1, x, old_w - x * 2)
    modes = {"nearest-exact": "nearest-exact", "bilinear": "bilinear", "bicubic": "bicubic"}
    if upscale_method == "area":
        return F.interpolate(samples, size=(height, width), mode="area")
    if upscale_method not in modes:
        raise LoomError(f"comfy.utils.common_upscale: method {upscale_method!r} is not provided")
    kwargs = {} if upscale_method == "nearest-exact" else {"align_corners": False}
    return F.interpolate(samples, size=(height, width), mode=modes[upscale_method], **kwargs)
