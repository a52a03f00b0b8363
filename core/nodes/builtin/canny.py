"""The Canny edge detector (ComfyUI ``comfy_extras/nodes_canny.py``) in plain torch.

ComfyUI calls ``kornia.filters.canny`` (kornia 0.7-0.8) with its defaults; this is the same
algorithm, step for step, so the edges are the same pixels:

1. RGB to grey with weights 0.299, 0.587, 0.114;
2. a separable 5-tap Gaussian blur (sigma 1, taps ``exp(-x²/2)`` normalised), horizontal then
   vertical, edges reflected;
3. the unnormalised Sobel gradient (edges replicated), magnitude ``sqrt(gx² + gy² + 1e-6)``;
4. non-maximum suppression: the gradient angle rounded to 45°, a pixel kept where it exceeds
   both neighbours along that direction (neighbours outside the image count as 0);
5. double threshold (weak above ``low``, strong above ``high``, both strict) and hysteresis:
   weak pixels 8-connected to strong ones become strong, repeated until nothing changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import loom
from loom.input_checks import check_min_size
from loom.types import Image

ui = loom.ui

GREY_WEIGHTS = (0.299, 0.587, 0.114)
EPS = 1e-6
#: neighbour offsets (dy, dx) of the 8 directions k*45° (atan2(gy, gx), y pointing down)
DIRECTIONS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))


def gaussian_taps(size: int = 5, sigma: float = 1.0) -> Any:
    import torch

    x = torch.arange(size, dtype=torch.float32) - size // 2
    taps = torch.exp(-x.pow(2.0) / (2 * sigma**2))
    return taps / taps.sum()


def _correlate(planes: Any, kernel: Any, padding: tuple[int, int, int, int], mode: str) -> Any:
    import torch.nn.functional as F

    padded = F.pad(planes, padding, mode=mode)
    return F.conv2d(padded, kernel.to(planes)[None, None])


def gaussian_blur(grey: Any, size: int = 5, sigma: float = 1.0) -> Any:
    """Separable blur of ``[B, 1, H, W]``: the row pass, then the column pass (reflect)."""
    taps = gaussian_taps(size, sigma)
    half = size // 2
    rows = _correlate(grey, taps[None, :], (half, half, 0, 0), "reflect")
    return _correlate(rows, taps[:, None], (0, 0, half, half), "reflect")


def sobel(blurred: Any) -> tuple[Any, Any]:
    """``(gx, gy)``: the 3x3 Sobel correlations, edges replicated, not normalised."""
    import torch

    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    return (
        _correlate(blurred, kx, (1, 1, 1, 1), "replicate"),
        _correlate(blurred, kx.T.contiguous(), (1, 1, 1, 1), "replicate"),
    )


def _neighbour(values: Any, dy: int, dx: int) -> Any:
    """``values`` at ``(y + dy, x + dx)``, zero outside the image."""
    import torch.nn.functional as F

    height, width = values.shape[-2:]
    padded = F.pad(values, (1, 1, 1, 1))
    return padded[..., 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]


def non_maximum_suppression(magnitude: Any, gx: Any, gy: Any) -> Any:
    """The magnitude where it beats both neighbours along the rounded gradient, else 0."""
    import torch

    octant = (torch.atan2(gy, gx) * (4 / math.pi)).round()
    forward = (octant % 8).long()
    backward = ((octant + 4) % 8).long()
    # magnitude minus each neighbour; a pixel is a maximum where both differences are > 0
    margins = torch.cat([magnitude - _neighbour(magnitude, dy, dx) for dy, dx in DIRECTIONS], 1)
    is_max = torch.minimum(margins.gather(1, forward), margins.gather(1, backward)) > 0.0
    return magnitude * is_max


def hysteresis(weak: Any, strong: Any) -> Any:
    """Grow ``strong`` into 8-connected ``weak`` pixels until it stops changing."""
    import torch
    import torch.nn.functional as F

    edges = strong.clone()
    while True:
        reached = F.max_pool2d(edges, 3, stride=1, padding=1) * weak
        grown = torch.maximum(strong, reached)
        if torch.equal(grown, edges):
            return edges
        edges = grown


def canny_edges(image: Image, low: float, high: float) -> Any:
    """``[B, 1, H, W]`` edges (0 or 1) of an IMAGE ``[B, H, W, C]``."""
    import torch

    rgb = image[..., :3].movedim(-1, 1).float()
    if rgb.shape[1] == 3:
        weights = torch.tensor(GREY_WEIGHTS, dtype=rgb.dtype, device=rgb.device)
        grey = (rgb * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)
    else:
        grey = rgb
    gx, gy = sobel(gaussian_blur(grey))
    magnitude = torch.sqrt(gx * gx + gy * gy + EPS)
    thin = non_maximum_suppression(magnitude, gx, gy)
    weak = (thin > low).float()
    strong = (thin > high).float()
    return hysteresis(weak, strong)


#: The smallest side the default 5x5 blur's reflect padding (2 pixels) works on.
MIN_SIDE = 3


@loom.node("Canny", category="image/preprocessors", v3=True)
class Canny:
    image: Image
    low_threshold: float = ui.float(0.4, min=0.01, max=0.99, step=0.01)
    high_threshold: float = ui.float(0.8, min=0.01, max=0.99, step=0.01)

    def run(self, ctx: loom.RunContext) -> Image:
        _, height, width, _ = self.image.shape
        check_min_size(
            "Canny",
            "image",
            height,
            width,
            MIN_SIDE,
            "its 5x5 blur mirrors 2 pixels at each border",
        )
        edges = canny_edges(self.image, self.low_threshold, self.high_threshold)
        return edges.repeat(1, 3, 1, 1).movedim(1, -1).to(self.image.dtype)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    register(Canny, python_module="comfy_extras.nodes_canny")
