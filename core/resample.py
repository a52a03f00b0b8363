"""Resizing ``[B, C, H, W]`` tensors the way ComfyUI's ``common_upscale`` does.

Shared by the image nodes (which move channels first), the latent nodes and plugins (a
public module: :data:`loom.PUBLIC_MODULES`). Methods:
``nearest-exact``, ``bilinear``, ``area``, ``bicubic`` (torch ``interpolate``),
``lanczos`` (PIL, through 8-bit images, as ComfyUI does) and ``bislerp`` (spherical
interpolation of channel vectors, used on latents). ``crop="center"`` first trims the
input to the target aspect ratio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

IMAGE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
LATENT_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
CROP_METHODS = ("disabled", "center")


def center_crop(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Trim the last two dims of ``samples`` to the aspect ratio ``width / height``."""
    old_width, old_height = samples.shape[-1], samples.shape[-2]
    old_aspect = old_width / old_height
    new_aspect = width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_width - old_width * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_height - old_height * (old_aspect / new_aspect)) / 2)
    return samples.narrow(-2, y, old_height - y * 2).narrow(-1, x, old_width - x * 2)


def common_upscale(
    samples: torch.Tensor, width: int, height: int, method: str, crop: str
) -> torch.Tensor:
    """Resize ``samples`` (``[B, C, H, W]``, or ``[B, C, T, H, W]``) to ``height x width``."""
    import torch

    orig_shape = tuple(samples.shape)
    if len(orig_shape) > 4:  # video latents: fold frames into the batch
        samples = samples.reshape(orig_shape[0], orig_shape[1], -1, orig_shape[-2], orig_shape[-1])
        samples = samples.movedim(2, 1).reshape(-1, orig_shape[1], orig_shape[-2], orig_shape[-1])
    s = center_crop(samples, width, height) if crop == "center" else samples
    if method == "bislerp":
        out = bislerp(s, width, height)
    elif method == "lanczos":
        out = lanczos(s, width, height)
    else:
        out = torch.nn.functional.interpolate(s, size=(height, width), mode=method)
    if len(orig_shape) == 4:
        return out
    out = out.reshape((orig_shape[0], -1, orig_shape[1], height, width))
    return out.movedim(2, 1).reshape((*orig_shape[:-2], height, width))


def lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Lanczos resize through PIL; values are quantised to 8 bits as in ComfyUI."""
    import numpy as np
    import torch
    from PIL import Image as PILImage

    results = []
    for item in samples:
        array = np.clip(255.0 * item.movedim(0, -1).detach().cpu().float().numpy(), 0, 255).astype(
            np.uint8
        )
        single = array.shape[-1] == 1
        picture = PILImage.fromarray(array[..., 0] if single else array)
        resized = np.array(picture.resize((width, height), resample=PILImage.Resampling.LANCZOS))
        tensor = torch.from_numpy(resized.astype(np.float32) / 255.0)
        results.append(tensor.unsqueeze(0) if single else tensor.movedim(-1, 0))
    return torch.stack(results).to(samples.device, samples.dtype)


def _slerp(b1: torch.Tensor, b2: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of row vectors ``b1``, ``b2`` (``[N, C]``) by ``ratio`` (``[N, 1]``)."""
    import torch

    channels = b1.shape[-1]
    b1_norms = torch.norm(b1, dim=-1, keepdim=True)
    b2_norms = torch.norm(b2, dim=-1, keepdim=True)
    b1_unit = b1 / b1_norms
    b2_unit = b2 / b2_norms
    b1_unit[b1_norms.expand(-1, channels) == 0.0] = 0.0
    b2_unit[b2_norms.expand(-1, channels) == 0.0] = 0.0
    dot = (b1_unit * b2_unit).sum(1)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    r = ratio.squeeze(1)
    res = (torch.sin((1.0 - r) * omega) / sin_omega).unsqueeze(1) * b1_unit
    res = res + (torch.sin(r * omega) / sin_omega).unsqueeze(1) * b2_unit
    res *= (b1_norms * (1.0 - ratio) + b2_norms * ratio).expand(-1, channels)
    # Nearly parallel: keep b1; nearly opposite: fall back to a linear mix.
    res[dot > 1 - 1e-5] = b1[dot > 1 - 1e-5]
    res[dot < 1e-5 - 1] = (b1 * (1.0 - ratio) + b2 * ratio)[dot < 1e-5 - 1]
    return res


def _bilinear_taps(
    length_old: int, length_new: int, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """Per output position: blend ratio, left source index, right source index."""
    import torch

    coords = torch.arange(length_old, dtype=torch.float32, device=device).reshape((1, 1, 1, -1))
    left = torch.nn.functional.interpolate(coords, size=(1, length_new), mode="bilinear")
    ratios = left - left.floor()
    shifted = coords + 1
    shifted[:, :, :, -1] -= 1
    right = torch.nn.functional.interpolate(shifted, size=(1, length_new), mode="bilinear")
    return ratios, left.to(torch.int64), right.to(torch.int64)


def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bilinear resize that slerps channel vectors instead of lerping them (width, then height)."""
    orig_dtype = samples.dtype
    samples = samples.float()
    n, c, h, w = samples.shape

    ratios, idx1, idx2 = _bilinear_taps(w, width, samples.device)
    idx1, idx2 = idx1.expand((n, c, h, -1)), idx2.expand((n, c, h, -1))
    ratios = ratios.expand((n, 1, h, -1)).movedim(1, -1).reshape((-1, 1))
    first = samples.gather(-1, idx1).movedim(1, -1).reshape((-1, c))
    second = samples.gather(-1, idx2).movedim(1, -1).reshape((-1, c))
    result = _slerp(first, second, ratios).reshape(n, h, width, c).movedim(-1, 1)

    ratios, idx1, idx2 = _bilinear_taps(h, height, samples.device)
    idx1 = idx1.reshape((1, 1, -1, 1)).expand((n, c, -1, width))
    idx2 = idx2.reshape((1, 1, -1, 1)).expand((n, c, -1, width))
    ratios = ratios.reshape((1, 1, -1, 1)).expand((n, 1, -1, width)).movedim(1, -1).reshape((-1, 1))
    first = result.gather(-2, idx1).movedim(1, -1).reshape((-1, c))
    second = result.gather(-2, idx2).movedim(1, -1).reshape((-1, c))
    result = _slerp(first, second, ratios).reshape(n, height, width, c).movedim(-1, 1)
    return result.to(orig_dtype)


__all__ = [
    "CROP_METHODS",
    "IMAGE_METHODS",
    "LATENT_METHODS",
    "bislerp",
    "center_crop",
    "common_upscale",
    "lanczos",
]
